// Start the StoryShort system (`python -m tools.run_local`, what `make run` runs) on free
// loopback ports with its own data directory, wait until the gateway is ready, and stop it
// (SIGTERM: run_local stops its four processes) when asked. Used by the type check and the
// tests; it needs the repository's virtual environment (`make venv`).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const PYTHON = process.env.PYTHON ?? join(ROOT, ".venv/bin/python");

/** A port nothing listens on now (the OS picks it). */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** Poll `check` until it answers true, at most `timeoutMs` (it may throw meanwhile). */
export async function waitFor(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (last: ${last.message})` : ""}`);
}

/** A Python process of the repository (a fake, for instance) that prints its port and
 * serves until its stdin closes. */
export async function startPython(args, env = {}) {
  const child = spawn(PYTHON, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "inherit"] });
  const port = await new Promise((resolvePort, reject) => {
    let out = "";
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const line = out.split("\n")[0];
      if (out.includes("\n")) resolvePort(Number(line.trim()));
    });
    child.once("exit", (code) => reject(new Error(`${args.join(" ")} exited with ${code} before printing its port`)));
  });
  return {
    port,
    stop: () =>
      new Promise((done) => {
        if (child.exitCode !== null) return done();
        child.once("exit", () => done());
        child.stdin.end();
      }),
  };
}

/**
 * The system on free ports. `env` adds settings (AUTH_REQUIRED, a provider, ...).
 * Answers { url, env, stop() }.
 */
export async function startSystem(env = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), "storyshort-client-"));
  const ports = {};
  for (const name of [
    "GATEWAY_PORT",
    "IMAGEGEN_PORT",
    "STORAGE_PORT",
    "STATUS_PORT",
    "IMAGEGEN_METRICS_PORT",
    "STORAGE_METRICS_PORT",
    "STATUS_METRICS_PORT",
  ]) {
    ports[name] = String(await freePort());
  }
  const fullEnv = {
    ...process.env,
    ...ports,
    DATA_DIR: dataDir,
    LOG_LEVEL: process.env.LOG_LEVEL ?? "WARNING",
    ...env,
  };
  const child = spawn(PYTHON, ["-m", "tools.run_local"], { cwd: ROOT, env: fullEnv, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  const exited = new Promise((done) => child.once("exit", (code, signal) => done(code ?? signal)));
  const url = `http://127.0.0.1:${ports.GATEWAY_PORT}`;
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`run_local exited with ${child.exitCode}:\n${output}`);
        const answer = await fetch(`${url}/readyz`);
        return answer.status === 200;
      },
      60_000,
      "the system is ready",
    );
  } catch (error) {
    child.kill("SIGTERM");
    await exited;
    rmSync(dataDir, { recursive: true, force: true });
    throw new Error(`${error.message}\n${output}`);
  }
  return {
    url,
    env: fullEnv,
    output: () => output,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
