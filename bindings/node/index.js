// sqlite-gpt2 for Node: where the bundled extension is, and loading it into a
// better-sqlite3 Database. lib/ holds gpt2.so and the libraries it needs beside it
// (found through its $ORIGIN run path).
"use strict";
const fs = require("fs");
const path = require("path");

/** Absolute path of the bundled gpt2.so, for db.loadExtension() or the sqlite3 shell's .load. */
function getLoadablePath() {
  const p = path.join(__dirname, "lib", "gpt2.so");
  if (!fs.existsSync(p)) {
    throw new Error(`sqlite-gpt2: ${p} is missing (the package is for ${process.platform}-${process.arch}?)`);
  }
  return p;
}

/** Loads the extension into a better-sqlite3 Database (anything with loadExtension(path)). */
function load(db) {
  db.loadExtension(getLoadablePath());
}

module.exports = { getLoadablePath, load };
