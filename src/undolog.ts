/**
 * The undo log of the open transaction: for every index change, the key and
 * the value it replaced (or that there was none). Rollback walks it
 * backwards; commit clears it. Kept in one growable byte array, so a put
 * allocates nothing.
 */
import { assert, KEY_SIZE } from "./format.ts";

/** Bytes per entry: key, had-old flag, old segment, offset and size (u32 each). */
const ENTRY_SIZE = KEY_SIZE + 16;
/** First allocation; doubles as needed. */
const INITIAL_ENTRIES = 1024;

export class UndoLog {
  private bytes = new Uint8Array(INITIAL_ENTRIES * ENTRY_SIZE);
  private view = new DataView(this.bytes.buffer);
  length = 0;

  /** Records that `key` had the value (segment, offset, size), or none when `had` is false. */
  push(key: Uint8Array, had: boolean, segment: number, offset: number, size: number): void {
    const at = this.length * ENTRY_SIZE;
    if (at + ENTRY_SIZE > this.bytes.length) {
      const grown = new Uint8Array(this.bytes.length * 2);
      grown.set(this.bytes);
      this.bytes = grown;
      this.view = new DataView(grown.buffer);
    }
    this.bytes.set(key, at);
    this.view.setUint32(at + KEY_SIZE, had ? 1 : 0, true);
    this.view.setUint32(at + KEY_SIZE + 4, segment, true);
    this.view.setUint32(at + KEY_SIZE + 8, offset, true);
    this.view.setUint32(at + KEY_SIZE + 12, size, true);
    this.length++;
  }

  /** Calls `restore` for each entry, newest first, then empties the log. */
  unwind(restore: (key: Uint8Array, had: boolean, segment: number, offset: number, size: number) => void): void {
    for (let i = this.length - 1; i >= 0; i--) {
      const at = i * ENTRY_SIZE;
      const flag = this.view.getUint32(at + KEY_SIZE, true);
      assert(flag === 0 || flag === 1, "undo entry flag");
      restore(
        this.bytes.subarray(at, at + KEY_SIZE), flag === 1,
        this.view.getUint32(at + KEY_SIZE + 4, true), this.view.getUint32(at + KEY_SIZE + 8, true),
        this.view.getUint32(at + KEY_SIZE + 12, true),
      );
    }
    this.clear();
  }

  /** Forgets everything (at commit); shrinks back if a big transaction grew it. */
  clear(): void {
    this.length = 0;
    if (this.bytes.length > 64 * INITIAL_ENTRIES * ENTRY_SIZE) {
      this.bytes = new Uint8Array(INITIAL_ENTRIES * ENTRY_SIZE);
      this.view = new DataView(this.bytes.buffer);
    }
  }
}
