// Opens a page of admit in Debian's Chromium, optionally clicks a button, and prints what a
// person would see as one JSON line: {state, message, posts, consoleErrors}.
// Usage: node drive.mjs URL (open|click) SCREENSHOT.png [WIDTHxHEIGHT]
import { chromium } from "playwright-core";

const [url, action, screenshot, size = "1024x768"] = process.argv.slice(2);
const [width, height] = size.split("x").map(Number);
const settled = ["confirmed", "invalid", "expired", "superseded", "missing", "error"];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  headless: true,
  // Without these, Chromium reaches for Google's hosts, which this network refuses.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width, height } });
  const posts = [];
  const external = [];
  const consoleErrors = [];
  page.on("request", (request) => {
    if (request.method() === "POST") posts.push(new URL(request.url()).pathname);
    if (!request.url().startsWith(new URL(url).origin)) external.push(request.url());
  });
  page.on("console", (msg) => { if (msg.type() === "error") consoleErrors.push(msg.text()); });
  await page.goto(url, { waitUntil: "networkidle" });
  if (action === "click") {
    await page.getByRole("button", { name: "Confirm my account" }).click();
    await page.waitForFunction(
      (states) => states.includes(document.body.dataset.state), settled, { timeout: 15000 });
  } else {
    // Give any script that would act on load every chance to do so.
    await page.waitForTimeout(500);
    await page.waitForLoadState("networkidle");
  }
  await page.screenshot({ path: screenshot, fullPage: true });
  const state = await page.evaluate(() => document.body.dataset.state);
  const message = await page.locator("#message").innerText();
  const buttonVisible = await page.getByRole("button", { name: "Confirm my account" }).isVisible();
  console.log(JSON.stringify({ state, message, buttonVisible, posts, external, consoleErrors }));
} finally {
  await browser.close();
}
