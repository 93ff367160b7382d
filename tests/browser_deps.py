"""Install what the browser tests need (Chromium and ChromeDriver) when missing.

Debian's packages; run by `make test` before pytest. Without root or apt, it says
what is missing and the browser tests report it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

PACKAGES = {"chromium": "chromium", "chromedriver": "chromium-driver", "ffmpeg": "ffmpeg"}


def main() -> int:
    missing = [pkg for binary, pkg in PACKAGES.items() if shutil.which(binary) is None]
    if not missing:
        return 0
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(
            f"browser tests need: {' '.join(missing)} (apt-get install {' '.join(missing)})",
            file=sys.stderr,
        )
        return 0
    print(f"installing {' '.join(missing)} for the browser tests", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for another apt run (unattended upgrades, a parallel job) instead of failing.
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
    subprocess.run([*apt, "update", "-qq"], check=False, env=env)
    done = subprocess.run(
        [*apt, "install", "-y", "-qq", "--no-install-recommends", *missing], env=env, check=False
    )
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
