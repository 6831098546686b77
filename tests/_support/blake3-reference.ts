/**
 * Test helper: hash-wasm's portable BLAKE3, the independent implementation
 * our hashers are held to (tests/12, tests/13), and hex for comparing.
 *
 * @example
 * import { hex, referenceHex } from "./_support/blake3-reference.ts";
 * assert.is(hex(await hasher.digest()), referenceHex(bytes));
 */
import { createBLAKE3 } from "hash-wasm";

const reference = await createBLAKE3(256);

/** Lowercase hex of `bytes`. */
export function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** hash-wasm's BLAKE3-256 of `bytes`, in hex. */
export function referenceHex(bytes: Uint8Array): string {
  reference.init();
  reference.update(bytes);
  return reference.digest("hex");
}
