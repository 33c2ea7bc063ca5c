// Completes the staged package.json (make npm-pack): the version, read by the Makefile
// from ext/version.h, and the one CPU the bundled gpt2.so is built for.
// Usage: node stage.js PACKAGE_JSON VERSION NODE_CPU
"use strict";
const fs = require("fs");
const [file, version, cpu] = process.argv.slice(2);
if (!file || !version || !cpu) {
  console.error("usage: node stage.js PACKAGE_JSON VERSION NODE_CPU");
  process.exit(1);
}
const pkg = JSON.parse(fs.readFileSync(file, "utf8"));
pkg.version = version;
pkg.cpu = [cpu];
fs.writeFileSync(file, JSON.stringify(pkg, null, 2) + "\n");
