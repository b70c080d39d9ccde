// Drives Debian's Chromium through admit's pages, as a person would, and prints what it saw as
// one JSON line. Usage: node drive.mjs STEPS_JSON SCREENSHOT_DIR
// Steps: {"goto": url, "size": "390x844"?} {"fill": selector, "value": text} {"click": selector}
//        {"waitState": [states]} {"wait": ms} {"read": selector, "as": key} {"visible": selector, "as": key}
//        {"offline": true|false} {"screenshot": name} {"waitFor": selector}
//        {"eval": "document.cookie", "as": key}: what page scripts see
//        {"cookies": key}: the browser's cookies for the page, with their flags
//        {"mirror": "https://unpkg.com/"}: answer that CDN from the npm packages installed here
//        (this machine reaches no CDN); Subresource Integrity is still checked by the browser
// Output: {state, reads, posts, external, mirrored, consoleErrors}
import { chromium } from "playwright-core";
import path from "node:path";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const types = { ".js": "application/javascript", ".css": "text/css" };

const [stepsJson, shots] = process.argv.slice(2);
const steps = JSON.parse(stepsJson);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  headless: true,
  // Without these, Chromium reaches for Google's hosts, which this network refuses.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const seen = { reads: {}, posts: [], external: [], mirrored: [], consoleErrors: [] };
const mirrors = [];
try {
  const first = steps.find((step) => step.goto);
  const [width, height] = (first && first.size ? first.size : "1024x768").split("x").map(Number);
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  let origin = null;
  page.on("request", (request) => {
    if (request.method() === "POST") seen.posts.push(new URL(request.url()).pathname);
    if (mirrors.some((prefix) => request.url().startsWith(prefix))) seen.mirrored.push(request.url());
    else if (origin && !request.url().startsWith(origin)) seen.external.push(request.url());
  });
  let offline = false;
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    // While offline on purpose, the browser reports the failed request itself; that is the
    // point of the step, not an error of the page.
    if (offline && msg.text().includes("net::ERR_INTERNET_DISCONNECTED")) return;
    seen.consoleErrors.push(msg.text());
  });
  for (const step of steps) {
    if (step.goto) {
      origin = new URL(step.goto).origin;
      await page.goto(step.goto, { waitUntil: "networkidle" });
    } else if (step.fill) {
      await page.fill(step.fill, step.value);
    } else if (step.click) {
      await page.click(step.click);
    } else if (step.waitState) {
      await page.waitForFunction(
        (states) => states.includes(document.body.dataset.state), step.waitState, { timeout: 15000 });
    } else if (step.wait) {
      await page.waitForTimeout(step.wait);
      await page.waitForLoadState("networkidle");
    } else if (step.read) {
      seen.reads[step.as] = await page.locator(step.read).innerText();
    } else if (step.visible) {
      seen.reads[step.as] = await page.locator(step.visible).isVisible();
    } else if ("offline" in step) {
      offline = step.offline;
      await context.setOffline(offline);
    } else if (step.mirror) {
      mirrors.push(step.mirror);
      await page.route(step.mirror + "**", async (route) => {
        // /name@1.2.3/some/file -> node_modules/name/some/file
        const [pkg, ...rest] = new URL(route.request().url()).pathname.slice(1).split("/");
        const file = path.join(here, "node_modules", pkg.replace(/@[^@]*$/, ""), ...rest);
        await route.fulfill({
          body: await readFile(file),
          headers: { "content-type": types[path.extname(file)] || "application/octet-stream",
            "access-control-allow-origin": "*" },
        });
      });
    } else if (step.eval) {
      seen.reads[step.as] = await page.evaluate(step.eval);
    } else if (step.cookies) {
      seen.reads[step.cookies] = (await context.cookies(page.url()))
        .map((cookie) => ({ name: cookie.name, httpOnly: cookie.httpOnly, sameSite: cookie.sameSite }));
    } else if (step.waitFor) {
      await page.waitForSelector(step.waitFor, { timeout: 15000 });
    } else if (step.screenshot) {
      await page.screenshot({ path: path.join(shots, step.screenshot + ".png"), fullPage: true });
    } else {
      throw new Error("unknown step " + JSON.stringify(step));
    }
  }
  seen.state = await page.evaluate(() => document.body.dataset.state);
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
