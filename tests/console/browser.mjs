// The web console in a real headless Chromium (Debian's `chromium`, driven by playwright-core
// with `executablePath`). Run by tests/console_browser.rs:
//   node tests/console/browser.mjs CQRS_BINARY SCREENSHOT_PATH
// It starts `cqrs --http 127.0.0.1:0 --in-memory --http-token T`, opens the console without the
// token (it must say so), sets the token, sends a CreateUser and a RenameUser from the form, sees
// the first arrive in the live feed, opens the user, moves the slider to version 1 and reads the
// old name; then saves a screenshot.

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [bin, screenshot] = process.argv.slice(2);
const TOKEN = "console-test-token";
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function fail(message) {
  console.error("FAIL: " + message);
  process.exitCode = 1;
  throw new Error(message);
}

const node = spawn(bin, ["--http", "127.0.0.1:0", "--in-memory", "--http-token", TOKEN], {
  stdio: ["ignore", "pipe", "inherit"],
});
const base = await new Promise((resolve, reject) => {
  const lines = createInterface({ input: node.stdout });
  lines.once("line", (l) => resolve(l.replace("listening on ", "")));
  node.once("exit", (code) => reject(new Error("cqrs exited " + code)));
});

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(base + "/");
  // Without the token, the console says it needs one.
  await page.waitForFunction(() => document.getElementById("conn").textContent === "token needed", null, { timeout: 10000 })
    .catch(() => fail("the console did not ask for the token"));
  await page.fill("#token", TOKEN);
  await page.click("#saveToken");
  await page.waitForLoadState("load");
  await page.waitForFunction(() => document.getElementById("conn").textContent === "connected", null, { timeout: 10000 })
    .catch(() => fail("the console did not connect with the token"));

  // A CreateUser from the form: 201, and it arrives in the live feed.
  await page.selectOption("#cmdType", "CreateUser");
  await page.fill("#cmdPayload", '{"id": "ada", "name": "Ada"}');
  await page.click("#send");
  await page.waitForFunction(() => document.getElementById("cmdStatus").textContent.startsWith("201"), null, { timeout: 10000 })
    .catch(() => fail("CreateUser from the form did not succeed"));
  await page.waitForFunction(
    () => [...document.querySelectorAll("#feed .ev")].some((e) => e.dataset.type === "UserCreated" && e.textContent.includes("ada")),
    null, { timeout: 10000 },
  ).catch(() => fail("the UserCreated did not arrive in the live feed"));

  // A rename, then a conflict that shows the current version.
  await page.selectOption("#cmdType", "RenameUser");
  await page.fill("#cmdPayload", '{"id": "ada", "name": "Ada Lovelace"}');
  await page.click("#send");
  await page.waitForFunction(() => document.getElementById("cmdStatus").textContent.startsWith("200"), null, { timeout: 10000 })
    .catch(() => fail("RenameUser from the form did not succeed"));
  await page.fill("#cmdVersion", "1");
  await page.fill("#cmdPayload", '{"id": "ada", "name": "Someone"}');
  await page.click("#send");
  await page.waitForFunction(() => document.getElementById("cmdStatus").textContent.includes("at version 2"), null, { timeout: 10000 })
    .catch(() => fail("a conflict did not show the current version"));

  // Open the user; the slider at version 1 shows the old name.
  await page.click('tr.user[data-id="ada"]');
  await page.waitForFunction(() => document.getElementById("state").textContent.includes("Ada Lovelace"), null, { timeout: 10000 })
    .catch(() => fail("the user's current state is not shown"));
  await page.$eval("#slider", (s) => { s.value = "1"; s.dispatchEvent(new Event("input")); });
  await page.waitForFunction(() => {
    const t = document.getElementById("state").textContent;
    return t.includes('"Ada"') && !t.includes("Lovelace");
  }, null, { timeout: 10000 }).catch(() => fail("the slider at version 1 does not show the old name"));
  await page.$eval("#slider", (s) => { s.value = "2"; s.dispatchEvent(new Event("input")); });
  await page.waitForFunction(() => document.getElementById("state").textContent.includes("Ada Lovelace"), null, { timeout: 10000 });

  if (errors.length) fail("errors on the page: " + errors.join("; "));
  if (screenshot) await page.screenshot({ path: screenshot });
  console.log("console: ok");
} finally {
  await browser.close();
  node.kill("SIGTERM");
}
