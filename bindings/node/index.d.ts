/** Absolute path of the bundled gpt2.so. */
export declare function getLoadablePath(): string;
/** Loads the extension into a better-sqlite3 Database. */
export declare function load(db: { loadExtension(path: string): unknown }): void;
