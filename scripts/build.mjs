// Compile src/ (TypeScript) to dist/ (Lua) with typescript-to-lua.
// dist/ is wiped first so that a deleted source leaves no stale Lua behind, and the
// build fails on any diagnostic, warnings included: dist/ is what users deploy.
import { rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import ts from "typescript";
import * as tstl from "typescript-to-lua";

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
console.log("build: dist/ written from src/");
