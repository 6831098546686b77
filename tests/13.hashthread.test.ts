// BLAKE3 on two threads (src/blake3parallel.ts, src/hashthread.ts): the
// runtime's real hash thread (a worker over shared memory) gives the same
// digests as the one-thread hasher and hash-wasm, at every piece boundary
// and fed in random pieces, and really takes pieces; no more than
// HASH_WORKERS_MAX workers run at once; a thread that fails to start, or
// dies midway, costs time but never the digest (the pieces a dead thread
// held are re-hashed here); pieces of a backing file go to the thread as
// places in the file (none copied; copies where the file is in memory only),
// and a thread that cannot read them costs time, never the digest; and the
// idle stop of a forgotten worker hands its values over first.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import "../adapters/runtime.ts"; // the runtime's adapter sets its hash thread starter
import { FaultyFs, SeededRandom } from "../adapters/faulty.ts";
import { runtimeFs } from "../adapters/runtime.ts";
import type { File } from "../src/fs.ts";
import { tempDir } from "./_support/tempdir.ts";
import { hex, referenceHex } from "./_support/blake3-reference.ts";
import {
  type FilePiece, HASH_THREAD_AFTER_PIECES, type HashThread, hashThreadStarter, ParallelBlake3, PIECE_BYTES, setHashThreadStarter,
} from "../src/blake3parallel.ts";
import { HASH_THREAD_IDLE_STOP_MS, HASH_WORKERS_MAX, idleStopping, type WorkerHashThread } from "../src/hashthread.ts";

const test = suite("hashthread");
const realStarter = hashThreadStarter();

/** `bytes` through a ParallelBlake3 in pieces of the given lengths. */
async function parallelHex(bytes: Uint8Array, pieces: number[]): Promise<string> {
  const hasher = ParallelBlake3.create();
  try {
    let at = 0;
    for (const p of pieces) {
      hasher.update(bytes.subarray(at, at + p));
      at += p;
    }
    assert.is(at, bytes.length, "pieces cover the input");
    return hex(await hasher.digest());
  } finally {
    hasher.release();
  }
}
/** The real starter, counting the pieces its threads take (`filePieces`: those given as a place in a file); `edit` may change a file piece first. */
function countingStarter(edit: (piece: FilePiece) => FilePiece = (p) => p): {
  start: () => HashThread; counts: { threads: number; pieces: number; filePieces: number };
} {
  const counts = { threads: 0, pieces: 0, filePieces: 0 };
  const start = (): HashThread => {
    const inner = realStarter!();
    counts.threads++;
    return {
      get queued() {
        return inner.queued;
      },
      submit(piece, counter, onCV) {
        const file = !(piece instanceof Uint8Array);
        const taken = inner.submit(file ? edit(piece) : piece, counter, onCV);
        if (taken) counts.pieces++;
        if (taken && file) counts.filePieces++;
        return taken;
      },
      finished: () => inner.finished(),
      recover: (hashHere) => inner.recover(hashHere),
      stop: () => inner.stop(),
    };
  };
  return { start, counts };
}

const THREAD_AFTER = HASH_THREAD_AFTER_PIECES * PIECE_BYTES;
const BIG = new Uint8Array(THREAD_AFTER + 6 * PIECE_BYTES + 3);
{
  const random = new SeededRandom(31);
  const words = new Uint32Array(BIG.buffer, 0, Math.floor(BIG.length / 4));
  for (let i = 0; i < words.length; i++) words[i] = random.below(2 ** 32);
}

test("the runtime's adapter offers a hash thread", () => {
  assert.type(realStarter, "function");
});

test("same digests as hash-wasm around every piece boundary, with the thread taking pieces", async () => {
  const { start, counts } = countingStarter();
  setHashThreadStarter(start);
  try {
    const lengths = [0, 1, PIECE_BYTES - 1, PIECE_BYTES, PIECE_BYTES + 1, THREAD_AFTER - 1, THREAD_AFTER, THREAD_AFTER + 1,
      THREAD_AFTER + PIECE_BYTES, THREAD_AFTER + 2 * PIECE_BYTES + 1, BIG.length];
    for (const len of lengths) {
      const bytes = BIG.subarray(0, len);
      assert.is(await parallelHex(bytes, [len]), referenceHex(bytes), `length ${len} in one update`);
    }
    assert.ok(counts.threads > 0 && counts.pieces > 0, `the thread took pieces (${counts.pieces} in ${counts.threads} threads)`);
  } finally {
    setHashThreadStarter(realStarter);
  }
});

test("same digests fed in random pieces (pieces straddling the held tail and the thread's slots)", async () => {
  const random = new SeededRandom(7);
  const want = referenceHex(BIG);
  for (let round = 0; round < 4; round++) {
    const pieces: number[] = [];
    for (let left = BIG.length; left > 0;) {
      const n = Math.min(left, 1 + random.below(round % 2 === 0 ? 3 * PIECE_BYTES : 70_000));
      pieces.push(n);
      left -= n;
    }
    assert.is(await parallelHex(BIG, pieces), want, `round ${round}: ${pieces.length} pieces`);
  }
});

test(`at most HASH_WORKERS_MAX (${HASH_WORKERS_MAX}) hashers get a worker at once; the others hash on their own thread`, async () => {
  const perHasher: { threads: number; pieces: number }[] = [];
  setHashThreadStarter(() => {
    const { start, counts } = countingStarter();
    perHasher.push(counts);
    return start();
  });
  try {
    const hashers = Array.from({ length: HASH_WORKERS_MAX + 1 }, () => ParallelBlake3.create());
    // Interleaved, so every hasher is past the thread threshold while the others still hold their workers.
    for (let at = 0; at < BIG.length; at += PIECE_BYTES) {
      for (const h of hashers) h.update(BIG.subarray(at, Math.min(BIG.length, at + PIECE_BYTES)));
    }
    const want = referenceHex(BIG);
    for (const h of hashers) assert.is(hex(await h.digest()), want);
    const taking = perHasher.filter((c) => c.pieces > 0).length;
    assert.is(taking, HASH_WORKERS_MAX, `hashers whose pieces went to a worker: ${perHasher.map((c) => c.pieces).join(", ")}`);
    for (const h of hashers) h.release();
    // Released: the workers are free again for the next hasher.
    assert.is(await parallelHex(BIG, [BIG.length]), want);
    assert.ok(perHasher[perHasher.length - 1]!.pieces > 0, "a hasher after the release got a worker");
  } finally {
    setHashThreadStarter(realStarter);
  }
});

test("no thread to be had (the starter throws): every piece is hashed here, same digest", async () => {
  setHashThreadStarter(() => {
    throw new Error("no workers in this sandbox");
  });
  try {
    assert.is(await parallelHex(BIG, [BIG.length]), referenceHex(BIG));
  } finally {
    setHashThreadStarter(realStarter);
  }
});

test("a thread that dies midway costs time, never the digest: the pieces it held are hashed here", async () => {
  let taken = 0;
  let recovered = 0;
  setHashThreadStarter(() => {
    const inner = realStarter!();
    let dead: Error | undefined;
    return {
      get queued() {
        return inner.queued;
      },
      submit(piece, counter, onCV) {
        if (dead !== undefined) throw dead;
        if (++taken === 6) {
          dead = new Error("the hash thread died (test)");
          inner.stop(); // it dies with pieces it took and never finished
          throw dead;
        }
        return inner.submit(piece, counter, onCV);
      },
      finished: () => (dead !== undefined ? Promise.reject(dead) : inner.finished()),
      recover(hashHere) {
        inner.recover((piece, counter) => {
          recovered++;
          return hashHere(piece, counter);
        });
      },
      stop: () => inner.stop(),
    };
  });
  try {
    assert.is(await parallelHex(BIG, [BIG.length]), referenceHex(BIG));
    assert.ok(taken >= 6, "the thread was given pieces before it died");
    assert.ok(recovered > 0, `pieces the dead thread held were re-hashed here (${recovered})`);
  } finally {
    setHashThreadStarter(realStarter);
  }
});

test("release() while a digest is awaited (a stream cancelled mid-read) fails that digest instead of touching a pooled instance", async () => {
  const hasher = ParallelBlake3.create();
  hasher.update(BIG);
  const digest = hasher.digest();
  hasher.release();
  try {
    await digest;
    assert.unreachable("digest() resolved after release()");
  } catch (e) {
    assert.match((e as Error).message, /released/);
  }
  // The pool's instances are sound: the next hasher gives the right digest.
  assert.is(await parallelHex(BIG, [BIG.length]), referenceHex(BIG));
});

/**
 * BIG written to `file` in random chunks and hashed with the file as the
 * hasher's backing, as putBlob does: each chunk given to update() as its
 * write starts, and written() told once it is done, one chunk late.
 */
async function backedHex(file: File, seed: number): Promise<string> {
  const random = new SeededRandom(seed);
  const hasher = ParallelBlake3.create({ backing: file });
  try {
    let at = 0;
    let before = 0;
    while (at < BIG.length) {
      const n = Math.min(BIG.length - at, 1 + random.below(seed % 2 === 0 ? 3 * PIECE_BYTES : 200_000));
      const chunk = BIG.subarray(at, at + n);
      hasher.update(chunk);
      file.write(chunk, at);
      hasher.written(before);
      before = at;
      at += n;
    }
    return hex(await hasher.digest());
  } finally {
    hasher.release();
  }
}

test("pieces of a backing file go to the thread as places in the file (nothing copied), same digests", async () => {
  const dir = tempDir("segstore-hashthread-");
  const { start, counts } = countingStarter();
  setHashThreadStarter(start);
  try {
    const want = referenceHex(BIG);
    for (const seed of [1, 2, 3]) {
      const file = runtimeFs.open(`${dir.path}/blob-${seed}`, "w+");
      try {
        assert.ok(file.workerRef !== undefined, "the runtime's files can be read by a worker");
        assert.is(await backedHex(file, seed), want, `seed ${seed}`);
      } finally {
        file.close();
      }
    }
    assert.ok(counts.filePieces > 0, `the thread read pieces from the file (${counts.filePieces})`);
    assert.is(counts.pieces, counts.filePieces, "and was handed no copies");
  } finally {
    setHashThreadStarter(realStarter);
    dir.cleanup();
  }
});

test("a backing file no other thread can see (FaultyFs, in memory): pieces are copied to the thread, same digest", async () => {
  const { start, counts } = countingStarter();
  setHashThreadStarter(start);
  try {
    const file = new FaultyFs({ seed: 5 }).open("/blob", "w+");
    assert.is(file.workerRef, undefined);
    assert.is(await backedHex(file, 4), referenceHex(BIG));
    assert.ok(counts.pieces > 0 && counts.filePieces === 0, `copies only (${counts.pieces} pieces, ${counts.filePieces} by file)`);
  } finally {
    setHashThreadStarter(realStarter);
  }
});

test("a thread that cannot open the backing file costs time, never the digest: the pieces are read back here", async () => {
  const dir = tempDir("segstore-hashthread-");
  let readBack = 0;
  // A reference to nothing: the worker's read fails, it is stopped, and recover() reads each piece it held on this thread.
  const { start, counts } = countingStarter((piece) => ({
    ...piece,
    ref: new TextEncoder().encode(`${dir.path}/no-such-file`),
    readBack(into) {
      readBack++;
      piece.readBack(into);
    },
  }));
  setHashThreadStarter(start);
  const file = runtimeFs.open(`${dir.path}/blob`, "w+");
  try {
    assert.is(await backedHex(file, 6), referenceHex(BIG));
    assert.ok(counts.filePieces > 0 && readBack > 0, `${counts.filePieces} pieces given by file, ${readBack} read back here`);
  } finally {
    file.close();
    setHashThreadStarter(realStarter);
    dir.cleanup();
  }
});

test("a piece neither the thread nor this one can read fails the digest, never gives a wrong one", async () => {
  const dir = tempDir("segstore-hashthread-");
  const { start } = countingStarter((piece) => ({
    ...piece,
    ref: new TextEncoder().encode(`${dir.path}/no-such-file`),
    readBack() {
      throw new Error("the piece is gone (test)");
    },
  }));
  setHashThreadStarter(start);
  const file = runtimeFs.open(`${dir.path}/blob`, "w+");
  try {
    await backedHex(file, 8);
    assert.unreachable("a digest came out of pieces nobody could read");
  } catch (e) {
    assert.match((e as Error).message, /the piece is gone/);
  } finally {
    file.close();
    setHashThreadStarter(realStarter);
    dir.cleanup();
  }
});

/** A worker stand-in that hashes nothing: it records what idleStopping does with it. */
function fakeWorker(log: string[]): WorkerHashThread {
  const waiting: ((cv: Uint8Array) => void)[] = [];
  let hashed = 0;
  return {
    get queued() {
      return waiting.length - hashed;
    },
    get busy() {
      return false;
    },
    get failed() {
      return false;
    },
    get owes() {
      return waiting.length > 0;
    },
    submit(_piece, _counter, onCV) {
      waiting.push(onCV);
      hashed = waiting.length; // "hashed" at once; handed over only by harvest
      log.push("submit");
      return true;
    },
    harvest() {
      for (const onCV of waiting.splice(0)) onCV(new Uint8Array(32).fill(1));
      hashed = 0;
      log.push("harvest");
    },
    finished() {
      log.push("finished");
      return Promise.resolve();
    },
    recover() {},
    stop() {
      log.push("stop");
    },
    receive() {},
    fail() {},
  };
}

test("idleStopping: a forgotten worker is stopped after the idle time, its values handed over first", async () => {
  const log: string[] = [];
  let started = 0;
  const thread = idleStopping(() => {
    started++;
    return fakeWorker(log);
  }, () => {});
  const got: (Uint8Array | Error)[] = [];
  thread.submit(new Uint8Array(PIECE_BYTES), 0, (cv) => got.push(cv));
  assert.is(started, 1);
  assert.is(got.length, 0, "nothing handed over while the worker runs");
  await new Promise((resolve) => setTimeout(resolve, HASH_THREAD_IDLE_STOP_MS + 200));
  assert.equal(log.slice(-2), ["harvest", "stop"], "harvested, then stopped");
  assert.is(got.length, 1, "the value reached its owner before the stop");
  await thread.finished(); // nothing is left to wait for
  thread.submit(new Uint8Array(PIECE_BYTES), 256, () => {});
  assert.is(started, 2, "the next piece starts another worker");
  thread.stop();
  assert.is(log[log.length - 1], "stop");
});

test.run();
