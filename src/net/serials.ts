/**
 * Serials: how the server knows whether a key changed since a client read
 * it (the vote of a commit).
 *
 * A key's serial is the id of the transaction that last wrote it, as far as
 * this server knows: the server remembers, in memory, the txid of every key
 * written since it started; a key not written since has the "floor", the
 * store's last txid when the server started (or when the table was last
 * reset). Serials only grow. A client reads a key together with its serial
 * and sends that serial back with its write; the vote fails (ConflictError)
 * when the key's serial is now greater, or when another client's voted,
 * not yet finished transaction writes the same key.
 *
 * The table is bounded (SERIALS_MAX): when it fills, the floor rises to the
 * newest txid and the table empties. Keys not written since then get the
 * new floor, which can only make a vote fail that would have passed (a
 * spurious ConflictError, the safe direction), never the reverse.
 */
import { assert } from "../format.ts";

/** Keys whose txid the server remembers individually (about 100 bytes each) before it resets to a higher floor. */
export const SERIALS_MAX = 1_000_000;

/**
 * The server's serial table.
 *
 * @example
 * const serials = new SerialTable(store.stats().lastTxid);
 * serials.serial(key) // the floor
 * serials.committed([key], 7n); serials.serial(key) // 7n
 */
export class SerialTable {
  #floor: bigint;
  #txids = new Map<string, bigint>();
  /** Keys written by voted transactions not yet finished or aborted. */
  #reserved = new Set<string>();
  readonly max: number;

  constructor(floor: bigint, max: number = SERIALS_MAX) {
    assert(floor >= 0n, "serial floor is a txid");
    this.#floor = floor;
    this.max = max;
  }

  /** The serial of `key` (a keyString). */
  serial(key: string): bigint {
    return this.#txids.get(key) ?? this.#floor;
  }

  get floor(): bigint {
    return this.#floor;
  }

  /** Keys the server remembers individually. */
  get size(): number {
    return this.#txids.size;
  }

  /** The keys of `writes` (key → serial the client read) that changed since, or are reserved by another vote. */
  conflicts(writes: Iterable<[key: string, readSerial: bigint]>): string[] {
    const out: string[] = [];
    for (const [key, readSerial] of writes) {
      if (this.#reserved.has(key) || this.serial(key) > readSerial) out.push(key);
    }
    return out;
  }

  /** Reserves keys for a voted transaction (none may be reserved already: the vote checked). */
  reserve(keys: Iterable<string>): void {
    for (const key of keys) {
      assert(!this.#reserved.has(key), "a key is reserved by one voted transaction at a time");
      this.#reserved.add(key);
    }
  }

  /** Releases a voted transaction's keys (finished or aborted). */
  release(keys: Iterable<string>): void {
    for (const key of keys) this.#reserved.delete(key);
  }

  /** Records that `keys` were written by transaction `txid`. */
  committed(keys: Iterable<string>, txid: bigint): void {
    for (const key of keys) {
      assert(txid >= this.serial(key), "serials only grow");
      this.#txids.set(key, txid);
    }
    if (this.#txids.size > this.max) {
      this.#txids.clear();
      this.#floor = txid;
    }
  }
}
