// The dashboard in Debian's Chromium, as a person uses it: sign up, create and copy a key, call
// the Speech API with it (curl), see the request on the usage page, revoke the key, transcribe a
// file and the (fake) microphone in the playground; every page screenshotted at 1280×800 and
// 390×844, its JS+CSS summed and checked by axe-core. Elements are found by role and accessible
// name only. Run by crates/aldea/tests/web.rs, which starts `aldea all` and judges the JSON this
// prints on its last line.
//
// Environment: WEB_URL, API_URL, NODE_DIR (holds node_modules), CHROMIUM, UPLOAD_WAV, MIC_WAV,
// MIC_SECONDS, SHOTS (a folder); INSPECT=0 skips the screenshots and axe (the flow alone, as the
// cluster test runs it through its front door).
import { createRequire } from 'node:module';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const WEB = env('WEB_URL');
const API = env('API_URL');
const SHOTS = env('SHOTS');
const require = createRequire(join(env('NODE_DIR'), 'package.json'));
const { chromium } = require('playwright-core');
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
mkdirSync(SHOTS, { recursive: true });

const result = { steps: [], pages: {}, csp_violations: [], console_errors: [] };
const step = (what) => { result.steps.push(what); process.stderr.write(`[browser] ${what}\n`); };

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'aldea-chromium-')), {
  executablePath: env('CHROMIUM'),
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    `--use-file-for-fake-audio-capture=${env('MIC_WAV')}%noloop`, '--autoplay-policy=no-user-gesture-required'],
});
await context.grantPermissions(['clipboard-read', 'clipboard-write', 'microphone'], { origin: WEB });
const page = context.pages()[0] ?? await context.newPage();
page.setDefaultTimeout(30_000);
page.on('console', (m) => {
  if (m.type() !== 'error') return;
  (m.text().includes('Content Security Policy') ? result.csp_violations : result.console_errors).push(m.text());
});

const SIZES = [[1280, 800], [390, 844]];

/** Screenshots at both sizes, the page's JS+CSS bytes, and axe-core's serious/critical findings. */
async function inspect(name) {
  await page.waitForLoadState('load');
  if (process.env.INSPECT === '0') return;
  const shots = [];
  const overflow = {};
  for (const [width, height] of SIZES) {
    await page.setViewportSize({ width, height });
    const path = join(SHOTS, `${name}-${width}x${height}.png`);
    await page.screenshot({ path, fullPage: true });
    shots.push(path);
    // Content wider than the viewport (a broken layout on a phone) shows as horizontal scroll.
    const wider = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    if (wider > 0) overflow[width] = wider;
  }
  await page.setViewportSize({ width: 1280, height: 800 });
  const assets = await page.evaluate(() => performance.getEntriesByType('resource')
    .filter((e) => /\.(js|css)(\?|$)/.test(new URL(e.name).pathname + new URL(e.name).search) || ['script', 'link', 'css'].includes(e.initiatorType))
    .map((e) => ({ url: e.name, bytes: e.decodedBodySize, transferred: e.transferSize })));
  await page.evaluate(AXE);
  const axe = await page.evaluate(async () => {
    const run = await window.axe.run(document, { resultTypes: ['violations'] });
    return run.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  result.pages[name] = { url: page.url(), shots, assets, js_css_bytes: assets.reduce((sum, a) => sum + a.bytes, 0), axe, overflow };
}

function curl(key) {
  const args = ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', `${API}/v1/listen`,
    '-H', `Authorization: Token ${key}`, '-H', 'Content-Type: audio/wav', '--data-binary', `@${env('UPLOAD_WAV')}`];
  // 0: no answer at all.
  return Number(spawnSync('curl', args, { encoding: 'utf8' }).stdout || 0);
}

const nav = (name) => page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true });

try {
  // The start page links the sign-up form.
  await page.goto(WEB);
  await inspect('landing');
  await page.getByRole('link', { name: 'Sign up', exact: true }).click();
  await inspect('signup');
  const email = `person-${Date.now()}@example.com`;
  await page.getByRole('textbox', { name: 'Email', exact: true }).fill(email);
  await page.getByLabel('Password', { exact: true }).fill('a long enough password');
  await page.getByRole('textbox', { name: 'Organization name', exact: true }).fill('Browser Test Co');
  await page.getByRole('button', { name: 'Sign up', exact: true }).click();
  await nav('API keys').waitFor();
  step('signed up');

  // One press of "Create key" (its name left empty) makes a key, shown once.
  await page.getByRole('button', { name: 'Create key', exact: true }).click();
  const secretField = page.getByRole('textbox', { name: 'New API key', exact: true });
  await secretField.waitFor();
  const key = await secretField.inputValue();
  await page.getByRole('button', { name: 'Copy', exact: true }).click();
  await page.getByRole('status').filter({ hasText: 'Copied' }).waitFor();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  result.key_copied = copied === key && key.length > 20;
  await inspect('keys-new');
  step('created and copied a key');

  // The new key's name, from the heading that presents it: “Your new key “NAME””.
  const heading = (await page.getByRole('heading', { name: /^Your new key/ }).textContent()).trim();
  const keyName = heading.replace(/^Your new key “/, '').replace(/”$/, '');
  result.key_name = keyName;

  // The copied key works against the gateway; the usage page shows the request within 5 s.
  result.curl_status = curl(copied);
  const called = Date.now();
  await nav('Usage').click();
  let seen = false;
  while (Date.now() - called < 15_000) {
    const recent = page.getByRole('region', { name: 'Recent requests', exact: true });
    if (await recent.count() && (await recent.getByRole('cell', { name: keyName, exact: true }).count()) > 0) { seen = true; break; }
    await page.waitForTimeout(250);
    await page.reload();
  }
  result.usage_seen_after_ms = seen ? Date.now() - called : null;
  await inspect('usage');
  step(`usage shows the request: ${seen}`);

  // Revoke (with its confirmation): the key is refused.
  await nav('API keys').click();
  const row = page.getByRole('row').filter({ has: page.getByRole('rowheader', { name: keyName, exact: true }) });
  await row.getByRole('button', { name: 'Revoke', exact: true }).click();
  await inspect('revoke-confirm');
  await page.getByRole('button', { name: 'Revoke', exact: true }).click();
  await page.getByRole('status').filter({ hasText: 'The key was revoked' }).waitFor();
  await inspect('keys');
  // Rotation asks first too (looked at, then cancelled).
  await page.getByRole('row').filter({ has: page.getByRole('rowheader', { name: 'default', exact: true }) })
    .getByRole('button', { name: 'Rotate', exact: true }).click();
  await inspect('rotate-confirm');
  await page.getByRole('link', { name: 'Cancel', exact: true }).click();
  const refusedAt = Date.now();
  result.revoked_status = curl(copied);
  result.revoked_checked_after_ms = Date.now() - refusedAt;
  step(`revoked: ${result.revoked_status}`);

  // The playground: a file.
  await nav('Playground').click();
  await page.getByLabel('Audio file', { exact: true }).setInputFiles(env('UPLOAD_WAV'));
  await page.getByRole('button', { name: 'Transcribe', exact: true }).click();
  const transcript = page.getByRole('region', { name: 'Transcript', exact: true });
  await page.waitForFunction((el) => el.textContent.trim().length > 0, await transcript.elementHandle(), { timeout: 120_000 });
  result.upload_transcript = (await transcript.textContent()).trim();
  const words = page.getByRole('region', { name: 'Words', exact: true });
  // The downloads come once the subtitle files are made (right after the transcript shows).
  await words.getByRole('link', { name: 'librivox.json', exact: true }).waitFor();
  result.downloads = await words.getByRole('link').allTextContents();
  step('transcribed a file');

  // The microphone: interim text while the recording plays, then the final text.
  const live = page.getByRole('region', { name: 'Live transcript', exact: true });
  result.live_before_start = (await live.textContent()).trim();
  await page.getByRole('button', { name: 'Start microphone', exact: true }).click();
  const started = Date.now();
  const playing = Number(env('MIC_SECONDS')) * 1000;
  const samples = [];
  while (Date.now() - started < playing + 2000) {
    const text = (await live.textContent()).trim();
    const interim = await live.evaluate((el) => [...el.children].some((c) => getComputedStyle(c).fontStyle === 'italic' && c.textContent.trim()));
    samples.push({ ms: Date.now() - started, words: text ? text.split(/\s+/).length : 0, interim });
    await page.waitForTimeout(250);
  }
  result.interim_while_playing = samples.some((s) => s.ms < playing && s.interim);
  result.text_while_playing = samples.some((s) => s.ms < playing && s.words > 0);
  result.first_text_ms = samples.find((s) => s.words > 0)?.ms ?? null;
  await page.getByRole('button', { name: 'Stop microphone', exact: true }).click();
  // The stream is over (its last finals in) when the start button is enabled again.
  const start = page.getByRole('button', { name: 'Start microphone', exact: true });
  const stopped = Date.now();
  while (!(await start.isEnabled()) && Date.now() - stopped < 30_000) await page.waitForTimeout(100);
  result.stop_to_closed_ms = Date.now() - stopped;
  result.live_transcript = (await live.textContent()).trim();
  result.live_interim_left = await live.evaluate((el) => [...el.children].some((c) => getComputedStyle(c).fontStyle === 'italic' && c.textContent.trim()));
  await inspect('playground');
  step('streamed the microphone');

  for (const name of ['Members', 'Billing', 'Docs']) {
    await nav(name).click();
    await inspect(name.toLowerCase());
  }
  await page.getByRole('button', { name: 'Log out', exact: true }).click();
  await page.getByRole('link', { name: 'Log in', exact: true }).click();
  await inspect('login');
  step('logged out');
} catch (e) {
  result.error = String(e.stack || e);
  try { await page.screenshot({ path: join(SHOTS, 'failure.png'), fullPage: true }); } catch (_) { /* the page is gone */ }
} finally {
  await context.close();
}
console.log(JSON.stringify(result));
