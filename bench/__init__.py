"""Side-by-side benchmarks of vidpulse: `make bench` runs `python -m bench`."""
