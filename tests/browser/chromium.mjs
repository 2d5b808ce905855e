// chromium.mjs — how the browser tests start Chromium (shared by driver.mjs and guest.test.mjs).
//
// Exactly the switches README.md lists: Playwright's own defaults are off (ignoreDefaultArgs) so
// Chromium gets this list and nothing else, plus a fresh --user-data-dir.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.RTCIO_CHROMIUM || "/usr/bin/chromium";

export const CHROMIUM_ARGS = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
  // Not in the brief's list, needed or harmless: Playwright's own default switches are turned off
  // (ignoreDefaultArgs) so the list above is exactly what Chromium gets, plus these.
  "--remote-debugging-pipe", // Playwright talks CDP over fds 3/4
  "--no-startup-window",
  "--disable-dev-shm-usage", // small /dev/shm in containers
  "--disable-background-timer-throttling", // several pages: keep timers (watchdog) exact
  "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
  "--mute-audio",
  "--no-default-browser-check",
  "--password-store=basic",
];

/**
 * Launches Chromium with CHROMIUM_ARGS (+ `extraArgs`) and a fresh profile in a new temp dir.
 * Playwright's own temp artifacts land in that dir too (TMPDIR is pointed at it), so
 * `cleanup()` removes everything. Returns {browser, tmpDir, cleanup}.
 */
export async function launchChromium({ extraArgs = [], timeout = 60000 } = {}) {
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), "rtcio-chromium-"));
  const profile = path.join(tmpDir, "profile");
  fs.mkdirSync(profile);
  process.env.TMPDIR = tmpDir;
  let browser;
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      ignoreDefaultArgs: true,
      args: [...CHROMIUM_ARGS, ...extraArgs, `--user-data-dir=${profile}`],
      timeout,
    });
  } catch (e) {
    fs.rmSync(tmpDir, { recursive: true, force: true });
    throw e;
  }
  const cleanup = async () => {
    try { await browser.close(); } catch { /* already gone */ }
    try { fs.rmSync(tmpDir, { recursive: true, force: true }); } catch { /* ignore */ }
  };
  return { browser, tmpDir, cleanup };
}
