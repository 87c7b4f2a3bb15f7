"""The page at / in headless Chromium: it loads, its script fetches the model
description, and a screenshot goes to the test artefacts. Skipped (exit 77)
when chromium is not installed (VAPO_SETUP_BROWSER=1 scripts/setup.sh adds it)."""

import os
import shutil
import subprocess
import sys

from server_common import Server, check, finish, parse_args, stop_cleanly, tiny_model

args = parse_args()
browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
if not browser:
    print("SKIP server_page: chromium is not installed (VAPO_SETUP_BROWSER=1 scripts/setup.sh installs it)")
    sys.exit(77)

model = tiny_model(args.make_model)
srv = Server(args.serve, model)
url = f"http://127.0.0.1:{srv.port}/"
flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--virtual-time-budget=3000"]
dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=60)
check(dom.returncode == 0 and "<title>vapo</title>" in dom.stdout, f"chromium loads the page: {dom.stderr[-500:]}")
check("tiny model" in dom.stdout, "the page's script fetched /v1/model and shows the model")

artefacts = args.artefacts or os.path.join(os.path.dirname(os.path.abspath(__file__)), "artefacts")
os.makedirs(artefacts, exist_ok=True)
shot = os.path.join(artefacts, "server_page.png")
if os.path.exists(shot):
    os.remove(shot)
r = subprocess.run([browser, *flags, "--window-size=1000,900", f"--screenshot={shot}", url],
                   capture_output=True, text=True, timeout=60)
check(r.returncode == 0 and os.path.exists(shot), f"screenshot written: {r.stderr[-500:]}")
if os.path.exists(shot):
    with open(shot, "rb") as f:
        data = f.read()
    check(data[:8] == b"\x89PNG\r\n\x1a\n", "the screenshot is a PNG")
    print(f"screenshot: {shot}")
stop_cleanly(srv)
finish("server_page")
