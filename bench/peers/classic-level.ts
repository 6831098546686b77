/**
 * classic-level (LevelDB) as a bench peer.
 *
 * Durability: every write passes `{ sync: true }`, so LevelDB fdatasyncs its
 * log before the call settles. A batch of several puts is one
 * `batch(ops, { sync: true })` (one log record, one sync); a batch of one is
 * `put(k, v, { sync: true })`, as a program doing one put per transaction
 * would write it. Keys and values are Uint8Array (`view` encoding).
 * Gets: `getSync` (classic-level 3's fastest path) and `get` (a promise).
 */
import { ClassicLevel } from "classic-level";
import type { PeerModule, PeerStore } from "../harness.ts";

type Level = ClassicLevel<Uint8Array, Uint8Array>;

class ClassicLevelPeer implements PeerStore {
  readonly note = "classic-level batch(ops, {sync:true}) per transaction; put(k, v, {sync:true}) for one-put transactions";
  constructor(private readonly db: Level) {}

  async writeBatch(keys: readonly Uint8Array[], values: readonly Uint8Array[], start: number, end: number): Promise<void> {
    if (end - start === 1) {
      await this.db.put(keys[start]!, values[start]!, { sync: true });
      return;
    }
    const ops: { type: "put"; key: Uint8Array; value: Uint8Array }[] = new Array(end - start);
    for (let i = start; i < end; i++) ops[i - start] = { type: "put", key: keys[i]!, value: values[i]! };
    await this.db.batch(ops, { sync: true });
  }

  get(key: Uint8Array): Uint8Array | undefined {
    return this.db.getSync(key);
  }

  getAsync(key: Uint8Array): Promise<Uint8Array | undefined> {
    return this.db.get(key);
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

/** The classic-level peer: Node and Deno (the prebuilt LevelDB addon loads in both). */
export const peer: PeerModule = {
  runtimes: ["node", "deno"],
  async openPeer(dir: string, options: { create: boolean }): Promise<PeerStore> {
    const db: Level = new ClassicLevel<Uint8Array, Uint8Array>(dir, {
      keyEncoding: "view",
      valueEncoding: "view",
      createIfMissing: options.create,
    });
    await db.open();
    return new ClassicLevelPeer(db);
  },
};
