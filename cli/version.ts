// The CLI's version is package.json's: the one number the package, the rockspec and the
// Lua module's _VERSION share (test/version.test.ts checks that they agree).
import { readFileSync } from "node:fs";

export function version(): string {
  // bin/version.js and cli/version.ts both sit one level below the package root, which
  // `npm pack` always ships package.json in.
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}
