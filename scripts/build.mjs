// Compile src/ (TypeScript) to dist/ (Lua) with typescript-to-lua, and cli/ to bin/
// (JavaScript for Node) with tsc, then write the rockspecs for what dist/ holds. All
// three outputs are committed: users deploy them.
// Outputs are wiped first so that a deleted source leaves nothing stale behind, and the
// build fails on any diagnostic, warnings included.
import { rmSync, chmodSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";
import ts from "typescript";
import * as tstl from "typescript-to-lua";
import { rockspecs } from "./rockspecs.mjs";

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
rmSync(path.join(root, "dist"), { recursive: true, force: true });

const result = tstl.transpileProject(path.join(root, "tsconfig.json"));
const diagnostics = result.diagnostics;
if (diagnostics.length > 0) {
  const host = {
    getCurrentDirectory: () => root,
    getCanonicalFileName: (f) => f,
    getNewLine: () => "\n",
  };
  process.stderr.write(ts.formatDiagnosticsWithColorAndContext(diagnostics, host));
  const errors = diagnostics.filter((d) => d.category === ts.DiagnosticCategory.Error).length;
  process.stderr.write(`\nbuild failed: ${errors} error(s), ${diagnostics.length - errors} warning(s)\n`);
  process.exit(1);
}

rmSync(path.join(root, "bin"), { recursive: true, force: true });
execFileSync(process.execPath, [path.join(root, "node_modules/typescript/bin/tsc"), "-p", path.join(root, "tsconfig.cli.json")], { stdio: "inherit" });
chmodSync(path.join(root, "bin/intermission.js"), 0o755);
rockspecs(root);
console.log("build: dist/ written from src/, bin/ from cli/, rockspecs from dist/ and package.json");
