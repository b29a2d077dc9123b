// A PostgreSQL server of the test's own, as the Rust tests start theirs
// (tests/common/postgres.rs): initdb and pg_ctl from Debian's install, in a temporary
// directory, on a free port below the ephemeral range, with fsync off; run as the `postgres`
// user when the test runs as root. Never the machine's own server.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const root = process.getuid?.() === 0;

/** Where the system's PostgreSQL programs are (`/usr/lib/postgresql/N/bin` on Debian). */
function binDir() {
  const versions = fs.readdirSync("/usr/lib/postgresql")
    .map((version) => path.join("/usr/lib/postgresql", version, "bin"))
    .filter((bin) => fs.existsSync(path.join(bin, "initdb")))
    .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  if (!versions.length) throw new Error("PostgreSQL is not installed (Debian's postgresql; .ci/run installs it)");
  return versions.at(-1);
}

/** Runs one of PostgreSQL's programs (as `postgres` when root); throws if it fails. */
function run(program, args) {
  const bin = path.join(binDir(), program);
  const [file, argv] = root ? ["runuser", ["-u", "postgres", "--", bin, ...args]] : [bin, args];
  return execFileSync(file, argv, { stdio: ["ignore", "pipe", "pipe"] }).toString();
}

/** Starts a server with a database `oddsbus`; resolves to `{ url, stop }`. */
export function startPostgres() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "oddsbus-browser-pg-"));
  if (root) execFileSync("chown", ["postgres:postgres", dir]);
  const data = path.join(dir, "data");
  run("initdb", ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8"]);
  for (let attempt = 1; ; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 10000);
    const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off`;
    try {
      run("pg_ctl", ["-D", data, "-o", options, "-l", path.join(dir, "log"), "-w", "-t", "10", "start"]);
    } catch (error) {
      if (attempt < 5) continue; // the port was taken
      throw error;
    }
    run("createdb", ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "oddsbus"]);
    return {
      url: `postgres://postgres@127.0.0.1:${port}/oddsbus`,
      stop() {
        try {
          run("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      },
    };
  }
}
