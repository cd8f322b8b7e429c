// Where and when a bench result was measured: the commit (and whether the tree had
// changes not committed), the machine and the date. Every results file carries it, and
// every table the README shows names it (bench/tables.ts).
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import os from "node:os";

export interface Machine {
  /** "model name" from /proc/cpuinfo (what the hypervisor shows, on a VM). */
  cpu: string;
  cores: number;
  memory_gib: number;
}

export interface Provenance {
  /** ISO 8601, when the section finished. */
  date: string;
  /** git rev-parse HEAD. */
  commit: string;
  /** The working tree differed from the commit (results and Markdown aside). */
  dirty: boolean;
  machine: Machine;
}

function cpuModel(): string {
  try {
    const m = readFileSync("/proc/cpuinfo", "utf8").match(/^model name\s*:\s*(.+)$/m);
    if (m) return m[1].trim();
  } catch {
    // not Linux: fall through
  }
  return os.cpus()[0]?.model ?? "unknown CPU";
}

export function machine(): Machine {
  return { cpu: cpuModel(), cores: os.cpus().length, memory_gib: Math.round(os.totalmem() / 2 ** 30) };
}

export function describeMachine(m: Machine): string {
  return `${m.cpu}, ${m.cores} cores, ${m.memory_gib} GiB`;
}

/**
 * The commit the measured code is at. Read when a run starts: the results it writes and
 * the README tables it rewrites do not count as changes to the code measured.
 */
export function commitOf(root: string): { commit: string; dirty: boolean } {
  const git = (...args: string[]) => execFileSync("git", ["-C", root, ...args], { encoding: "utf8" });
  const commit = git("rev-parse", "HEAD").trim();
  const changes = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results", ":(exclude)*.md").trim();
  return { commit, dirty: changes !== "" };
}

export function provenance(at: { commit: string; dirty: boolean }): Provenance {
  return { date: new Date().toISOString(), commit: at.commit, dirty: at.dirty, machine: machine() };
}
