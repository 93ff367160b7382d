from vidpulse.cli import main

main()
