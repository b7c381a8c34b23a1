// Shared helpers for the browser checks: launch Debian's Chromium through
// playwright-core (no browser download), take numbered screenshots, and report
// each step as `ok - ID` / `not ok - ID: reason` lines that e2e/run counts.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const CHROMIUM = process.env.E2E_CHROMIUM ?? '/usr/bin/chromium';
export const SHOTS = process.env.E2E_SCREENSHOTS ?? path.resolve('target/e2e-screenshots');

export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is not set (run this through e2e/run)`);
  return value;
}

/** Launches headless Chromium with a fresh, throw-away user-data-dir. */
export async function launch() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tokengate-e2e-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1280, height: 900 },
  });
  context.setDefaultTimeout(15_000);
  const close = async () => {
    await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, close };
}

/** Records what a page prints on its console and which requests fail. */
export function watch(page) {
  const log = { console: [], failedRequests: [], responses: [] };
  page.on('console', (m) => log.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.console.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => log.failedRequests.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  page.on('response', (r) => log.responses.push({ method: r.request().method(), url: r.url(), status: r.status() }));
  return log;
}

export function assert(condition, message) {
  if (!condition) throw new Error(message);
}

export function assertEqual(actual, expected, what) {
  if (actual !== expected) {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

/**
 * Runs the steps of one flow in order. Each step is [id, async fn]; it passes
 * when fn returns. After a failing step the remaining ones are reported as not
 * run (they depend on the earlier ones). Returns the number of failed steps.
 */
export async function runSteps(prefix, page, steps) {
  fs.mkdirSync(SHOTS, { recursive: true });
  let failed = 0;
  let broken = null;
  for (const [id, fn] of steps) {
    const name = `${prefix}-${id}`;
    if (broken) {
      console.log(`not ok - ${name}: not run, step ${broken} failed`);
      failed += 1;
      continue;
    }
    try {
      await fn();
      console.log(`ok - ${name}`);
    } catch (err) {
      failed += 1;
      broken = name;
      console.log(`not ok - ${name}: ${String(err?.message ?? err).split('\n')[0]}`);
      for (const line of String(err?.stack ?? '').split('\n').slice(1, 6)) console.log(`#   ${line.trim()}`);
      if (page) {
        const file = path.join(SHOTS, `${prefix}-FAILED-${id}.png`);
        await page.screenshot({ path: file, fullPage: false }).catch(() => {});
        console.log(`#   screenshot: ${file}`);
      }
    }
  }
  return failed;
}

/** Saves a screenshot named PREFIX-NN-NAME.png under target/e2e-screenshots/. */
export function shooter(prefix) {
  let n = 0;
  return async (page, name, options = {}) => {
    n += 1;
    const file = path.join(SHOTS, `${prefix}-${String(n).padStart(2, '0')}-${name}.png`);
    fs.mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: file, ...options });
    return file;
  };
}
