/**
 * BLAKE3-256 of a long stream on two threads: ours and a hash thread the
 * runtime's adapter provides (a worker). BLAKE3 is a tree, so each 256 KiB
 * piece of the input is a subtree whose chaining value any thread can
 * compute from the piece and its position alone (assembly/blake3.ts
 * pieceCV); the values are then folded in order (pushPiece) and the input's
 * last piece goes through the ordinary streaming hasher, which gives the
 * root its flag. The same digest as Blake3, as tests/13 checks.
 *
 * Pieces go to the hash thread while it has fewer than
 * HASH_THREAD_QUEUE_MAX waiting, and are hashed here otherwise, so the two
 * threads share the work by how fast each gets through it and memory stays
 * bounded without update() ever waiting. A piece is dispatched only once a
 * byte after it has arrived: the last piece is never a piece (it may hold
 * the root). The thread starts only once a stream passes
 * HASH_THREAD_AFTER_PIECES pieces (a worker costs tens of ms to start, a
 * small blob less to hash), and stops at release() (or, for a hasher
 * nobody finishes, after a second of idleness: src/hashthread.ts).
 *
 * A hasher created with a backing file (the temp file a blob is written
 * to, the blob file a verified read reads) gives the thread places in that
 * file instead of copies, once `written` says the bytes are there: the
 * worker reads them from the page cache itself, and this thread, which
 * also runs the socket and the writes, copies nothing for it.
 *
 * Without a hash thread (an adapter that offers none, one that failed to
 * start, or HASH_WORKERS_MAX already busy), every piece is hashed here:
 * the same digest, one core.
 */
import { assert, BLOB_HASH_SIZE } from "./format.ts";
import { type HasherInstance, hasherInstance, hasherInstanceRelease } from "./blake3.ts";
import type { File } from "./fs.ts";

/** Bytes per piece: assembly/blake3.ts PIECE_BYTES (checked against the module at first use). */
export const PIECE_BYTES = 256 * 1024;
/** Chunks per piece: a piece at index i starts at chunk i * PIECE_CHUNKS. */
const PIECE_CHUNKS = PIECE_BYTES / 1024;
/**
 * Pieces waiting on the hash thread, at most (4 MiB): enough to keep it
 * busy while this thread does its share and its I/O, few enough that memory
 * stays flat; past it, pieces are hashed here.
 */
export const HASH_THREAD_QUEUE_MAX = 8;
/** A stream gets a hash thread only after this many pieces (8 MiB): smaller ones hash faster than a worker starts. */
export const HASH_THREAD_AFTER_PIECES = 32;
/**
 * Bytes of a file reference given as a string (a path), at most: Linux's
 * PATH_MAX. A file with a longer one is not read by the thread: its pieces
 * are copied to it, as a stream's are.
 */
export const REF_BYTES_MAX = 4096;

/**
 * A piece the hash thread reads from a file itself, so the caller's thread
 * copies nothing: its PIECE_BYTES are at `offset` in the file, written
 * before it is given.
 */
export interface FilePiece {
  /** The adapter's reference to the file for its worker (File.workerRef): a number, or a path's UTF-8 bytes. */
  readonly ref: number | Uint8Array;
  /** Differs for every file given, so a worker never takes a new file for one it has open. */
  readonly fileId: number;
  readonly offset: number;
  /** Fills `into` (PIECE_BYTES) with the piece on the caller's thread, for recover(); throws if it cannot. */
  readBack(into: Uint8Array): void;
}

/** A thread that hashes pieces: what an adapter offers (adapters/node.ts, adapters/deno.ts; src/hashthread.ts). */
export interface HashThread {
  /**
   * Gives the thread `piece` (PIECE_BYTES, copied: the caller may reuse it
   * at once; or a FilePiece, read by the thread) as the subtree at chunk
   * `counter`; `onCV` gets its chaining value during a later `submit`,
   * `finished` or `recover` (or the error that kept recover from reading a
   * file piece back), pieces in the order given. Only while `queued` is
   * under HASH_THREAD_QUEUE_MAX. Returns false, taking nothing, when no
   * worker can be had (too many running, or none can start); throws the
   * thread's failure once it failed.
   */
  submit(piece: Uint8Array | FilePiece, counter: number, onCV: (cv: Uint8Array | Error) => void): boolean;
  /** Pieces given and not yet hashed, known at once (a counter the thread updates in shared memory). */
  readonly queued: number;
  /** Resolves once every piece given is hashed and handed over; rejects if the thread failed or was stopped. */
  finished(): Promise<void>;
  /**
   * After the thread failed (`submit` threw or `finished` rejected): hands
   * over the values of the pieces it took and never finished, computed by
   * `hashHere` from the copies it still holds (a file piece is read back
   * first), so a dead worker costs time, never a digest.
   */
  recover(hashHere: (piece: Uint8Array, counter: number) => Uint8Array): void;
  /** Stops the thread; a `finished` still waiting rejects. */
  stop(): void;
}

let hashThreadStart: (() => HashThread) | undefined;
/** The next FilePiece.fileId. */
let nextFileId = 1;

/**
 * Lets parallel hashers start hash threads with `start` (the runtime's
 * adapter calls this when it loads); undefined turns them off.
 */
export function setHashThreadStarter(start: (() => HashThread) | undefined): void {
  hashThreadStart = start;
}

/**
 * The starter set by setHashThreadStarter (the runtime adapter's, once it
 * is loaded), so a caller can wrap it, as the tests do to count pieces.
 *
 * @example
 * const start = hashThreadStarter();
 */
export function hashThreadStarter(): (() => HashThread) | undefined {
  return hashThreadStart;
}

/**
 * A BLAKE3-256 hasher for long streams (blobs) that hashes on a second
 * thread when the runtime offers one. `digest` is async and final.
 *
 * @example
 * const hasher = ParallelBlake3.create();
 * for await (const chunk of stream) hasher.update(chunk);
 * const digest = await hasher.digest(); // 32 bytes
 * hasher.release();
 */
export class ParallelBlake3 {
  #instance: HasherInstance | undefined;
  /** Pieces dispatched so far (piece n starts at chunk n * PIECE_CHUNKS). */
  #pieces = 0;
  /** Pieces whose chaining values are folded into the instance's tree, in order. */
  #folded = 0;
  /**
   * Chaining values of pieces #folded, #folded + 1, ...: undefined for
   * those the thread has not handed over yet. Folded as soon as the front
   * is known, so memory stays flat whatever the blob's size.
   */
  #unfolded: (Uint8Array | Error | undefined)[] = [];
  /**
   * The bytes after the last piece: at most PIECE_BYTES, dispatched once
   * more input arrives. Grown as needed, so hashing a small blob does not
   * allocate a whole piece.
   */
  #held = new Uint8Array(0);
  #heldLen = 0;
  #thread: HashThread | undefined;
  #threadTried = false;
  #digested = false;
  /** The file the input is also written to (see create), when the thread can read it. */
  #backing: { file: File; ref: number | Uint8Array; fileId: number } | undefined;
  /** Pieces kept for the thread until `written` says their bytes are in the backing file, in order. */
  #deferred: number[] = [];
  /** Bytes of input known to be in the backing file. */
  #written = 0;
  /** The thread turned a piece down (no worker to be had): pieces are no longer kept for it. */
  #refused = false;

  private constructor(instance: HasherInstance, backing: File | undefined) {
    this.#instance = instance;
    const piece = instance.exports.PIECE_BYTES.value as number;
    assert(piece === PIECE_BYTES, `BLAKE3 module's pieces are ${piece} bytes, this file expects ${PIECE_BYTES}`);
    instance.exports.reset();
    const ref = backing?.workerRef;
    if (backing !== undefined && ref !== undefined) {
      const encoded = typeof ref === "number" ? ref : new TextEncoder().encode(ref);
      if (typeof encoded === "number" || encoded.length <= REF_BYTES_MAX) {
        this.#backing = { file: backing, ref: encoded, fileId: nextFileId };
        nextFileId = (nextFileId + 1) | 0;
      }
    }
  }

  /**
   * A fresh hasher; `{ debug: true }` uses the debug build (assertions on).
   * `{ backing: file }` says each byte given to update() is also written at
   * the same offset of `file` (from 0), and that `written(n)` will say when
   * the first n are there (digest() taking all as written): the hash
   * thread then reads its pieces from the file instead of being handed
   * copies, so this thread copies nothing for it. The file must stay open
   * until digest() returns. Without a File.workerRef, as for the in-memory
   * FaultyFs, it is ignored.
   *
   * @example
   * const hasher = ParallelBlake3.create({ backing: file });
   * await file.writeAsync(chunk, 0); hasher.update(chunk); hasher.written(chunk.length);
   */
  static create(options: { debug?: boolean; backing?: File } = {}): ParallelBlake3 {
    return new ParallelBlake3(hasherInstance(options.debug === true), options.backing);
  }

  #live(): HasherInstance {
    const instance = this.#instance;
    if (instance === undefined || this.#digested) throw new Error("segstore internal assertion: parallel BLAKE3 hasher used after digest() or release()");
    return instance;
  }

  /** Hashes `data` after everything before it. The caller may reuse `data` at once. */
  update(data: Uint8Array): this {
    this.#live();
    let at = 0;
    while (at < data.length) {
      if (this.#heldLen === PIECE_BYTES) {
        this.#dispatch(this.#held); // a byte follows it: not the last piece
        this.#heldLen = 0;
      }
      if (this.#heldLen === 0) {
        // Whole pieces straight from `data`, each with a byte after it.
        for (; data.length - at > PIECE_BYTES; at += PIECE_BYTES) this.#dispatch(data.subarray(at, at + PIECE_BYTES));
      }
      const n = Math.min(PIECE_BYTES - this.#heldLen, data.length - at);
      if (this.#heldLen + n > this.#held.length) this.#heldGrow(this.#heldLen + n);
      this.#held.set(data.subarray(at, at + n), this.#heldLen);
      this.#heldLen += n;
      at += n;
    }
    return this;
  }

  /** Makes #held hold at least `bytes` (at most PIECE_BYTES), keeping what it holds. */
  #heldGrow(bytes: number): void {
    assert(bytes <= PIECE_BYTES, "the held tail is at most one piece");
    const grown = new Uint8Array(Math.min(PIECE_BYTES, Math.max(bytes, 2 * this.#held.length, 4096)));
    grown.set(this.#held.subarray(0, this.#heldLen));
    this.#held = grown;
  }

  /**
   * Says the first `bytes` of the input are in the backing file (see
   * create), so the thread may read the pieces kept for it. A no-op
   * without one.
   */
  written(bytes: number): void {
    this.#live();
    if (bytes > this.#written) this.#written = bytes;
    this.#submitDeferred(false);
  }

  /** Hashes `piece` (PIECE_BYTES, the next piece of the input) on the thread if it keeps up, else here. */
  #dispatch(piece: Uint8Array): void {
    const n = this.#pieces++;
    const counter = n * PIECE_CHUNKS;
    const thread = this.#threadFor();
    this.#unfolded.push(undefined);
    let taken = false;
    if (thread !== undefined && thread.queued + this.#deferred.length < HASH_THREAD_QUEUE_MAX) {
      if (this.#backing !== undefined && !this.#refused) {
        // The thread will read it from the file, once it is there: nothing is copied.
        this.#deferred.push(n);
        taken = true;
      } else {
        taken = this.#submit(thread, piece, n);
      }
    }
    if (!taken) this.#unfolded[n - this.#folded] = pieceHere(this.#live(), piece, counter);
    this.#submitDeferred(false);
  }

  /** Gives piece `n` (its bytes, or where it is in the backing file) to the thread; false if it did not take it. */
  #submit(thread: HashThread, piece: Uint8Array | FilePiece, n: number): boolean {
    try {
      // Piece n is never folded before its value comes, so #folded <= n when the callback runs.
      return thread.submit(piece, n * PIECE_CHUNKS, (cv) => void (this.#unfolded[n - this.#folded] = cv));
    } catch {
      // The thread failed: this piece and the ones after it are hashed here (digest() recovers the ones it held).
      return false;
    }
  }

  /** Gives the thread the deferred pieces now in the backing file (`all`: every one), hashing here those it cannot take; then folds. */
  #submitDeferred(all: boolean): void {
    const backing = this.#backing;
    while (backing !== undefined && this.#deferred.length > 0) {
      const n = this.#deferred[0]!;
      const offset = n * PIECE_BYTES;
      if (!all && offset + PIECE_BYTES > this.#written) break;
      this.#deferred.shift();
      const readBack = (into: Uint8Array): void => this.#readBack(offset, into);
      const thread = this.#thread;
      // The queue has room: pieces were kept only while it and they stayed under the limit, and only this hasher feeds it.
      const taken = thread !== undefined && thread.queued < HASH_THREAD_QUEUE_MAX &&
        this.#submit(thread, { ref: backing.ref, fileId: backing.fileId, offset, readBack }, n);
      if (!taken) {
        this.#refused = true;
        // Its bytes are not kept here: read them back, straight into the instance's input region.
        const instance = this.#instance!;
        readBack(instance.memory.subarray(instance.inputPtr, instance.inputPtr + PIECE_BYTES));
        this.#unfolded[n - this.#folded] = inputCV(instance, n * PIECE_CHUNKS);
      }
    }
    this.#fold();
  }

  /** Reads PIECE_BYTES at `offset` of the backing file into `into`, or throws. */
  #readBack(offset: number, into: Uint8Array): void {
    const backing = this.#backing!;
    const got = backing.file.read(into.subarray(0, PIECE_BYTES), offset);
    if (got !== PIECE_BYTES) {
      throw new Error(`segstore: reading back ${PIECE_BYTES} bytes at offset ${offset} of ${backing.file.path} to hash them gave ${got}: the file is shorter than the bytes hashed`);
    }
  }

  /** Adds the known chaining values at the front, in order, to the instance's tree; throws a piece's error. */
  #fold(): void {
    const { exports, memory, outPtr } = this.#instance!;
    while (this.#unfolded.length > 0 && this.#unfolded[0] !== undefined) {
      const cv = this.#unfolded[0];
      if (cv instanceof Error) throw cv;
      this.#unfolded.shift();
      memory.set(cv, outPtr);
      exports.pushPiece();
      this.#folded++;
    }
  }

  /** The hash thread, started once the stream passes HASH_THREAD_AFTER_PIECES pieces; undefined before, or without one. */
  #threadFor(): HashThread | undefined {
    if (this.#thread !== undefined || this.#threadTried) return this.#thread;
    if (hashThreadStart === undefined || this.#pieces < HASH_THREAD_AFTER_PIECES) return undefined;
    this.#threadTried = true;
    try {
      this.#thread = hashThreadStart();
    } catch {
      // No thread (a sandbox without workers, say): this thread hashes everything; the digest is the same.
      this.#thread = undefined;
    }
    return this.#thread;
  }

  /** The 32-byte hash of all input. Final: the hasher takes no more input after it. */
  async digest(): Promise<Uint8Array> {
    const instance = this.#live();
    const { exports, memory, inputPtr, inputSize, outPtr } = instance;
    this.#digested = true;
    // Every byte given is in the backing file by now (the caller's promise): the thread may have them all.
    this.#submitDeferred(true);
    const thread = this.#thread;
    if (thread !== undefined) {
      let failed = false;
      try {
        await thread.finished();
      } catch {
        failed = true;
      }
      // A release() while this waited (a stream cancelled mid-read) gave the instance back to the pool: touch it no more.
      if (this.#instance !== instance) throw new Error("segstore: the BLAKE3 hasher was released while its digest was awaited");
      if (failed) thread.recover((piece, counter) => pieceHere(instance, piece, counter));
    }
    this.#fold();
    assert(this.#folded === this.#pieces && this.#unfolded.length === 0, "every piece's chaining value was handed over and folded");
    // The last bytes (1..PIECE_BYTES once any input came) through the streaming hasher, after the pieces.
    let tail = 0;
    for (let at = 0; at < this.#heldLen;) {
      const n = Math.min(this.#heldLen - at, inputSize - tail);
      memory.set(this.#held.subarray(at, at + n), inputPtr + tail);
      tail = exports.update(n);
      at += n;
    }
    exports.digest();
    return memory.slice(outPtr, outPtr + BLOB_HASH_SIZE);
  }

  /** Stops the hash thread and gives the instance back; safe to call twice, and after a failure. */
  release(): void {
    this.#thread?.stop();
    this.#thread = undefined;
    const instance = this.#instance;
    if (instance === undefined) return;
    this.#instance = undefined;
    hasherInstanceRelease(instance);
  }
}

/** The chaining value of `piece` as the subtree at chunk `counter`, hashed on this thread by `instance`. */
function pieceHere(instance: HasherInstance, piece: Uint8Array, counter: number): Uint8Array {
  instance.memory.set(piece, instance.inputPtr);
  return inputCV(instance, counter);
}

/** The chaining value of the piece in `instance`'s input region, as the subtree at chunk `counter`. */
function inputCV(instance: HasherInstance, counter: number): Uint8Array {
  const { exports, memory, outPtr } = instance;
  exports.pieceCV(BigInt(counter));
  return memory.slice(outPtr, outPtr + BLOB_HASH_SIZE);
}
