/**
 * The hash thread's two halves, runtime-neutral: the code the worker runs
 * (a string, so no file sits beside the module: a `deno compile` binary and
 * the Node bundle carry it inside) and the side that talks to it. Each
 * adapter only makes the worker and wires its messages (adapters/node.ts:
 * worker_threads; adapters/deno.ts: a Web Worker).
 *
 * Pieces travel through shared memory, not messages: a message per piece
 * (a structured clone each way, 4,096 per GiB) grew both threads' heaps by
 * about 10 MiB over a 1 GiB blob, which a process kept under 100 MiB
 * cannot spare. One SharedArrayBuffer holds:
 *
 *   control words (i32)  SUBMITTED (pieces given), DONE (pieces hashed),
 *                        STOP, WAKE (this thread waits for a message)
 *   counters (f64 x Q)   the chunk counter of the piece in each slot
 *   cvs (32 B x Q)       the chaining value of the piece in each slot
 *   slots (PIECE x Q)    the pieces
 *   offsets (f64 x Q)    for a piece the worker reads from a file: its offset there
 *   refs (i32 x 3Q)      per slot: the file's id, the kind of its reference
 *                        (none: the piece is in its slot; a number, in
 *                        `numbers`; a string, in `strings`), and the
 *                        string's length in UTF-8 bytes
 *   numbers (f64 x Q), strings (REF_BYTES_MAX x Q): the references
 *
 * with Q = HASH_THREAD_QUEUE_MAX. Piece n lives in slot n % Q. This thread
 * fills a slot only while fewer than Q pieces are unfinished, and takes the
 * chaining values of finished pieces (harvest) before it fills a slot, so a
 * slot is never overwritten before its value is read. The worker blocks in
 * Atomics.wait on SUBMITTED. One message ever goes to it (the module's
 * bytes and the shared memory), and it sends one back only when this
 * thread has set WAKE because it awaits the last pieces (`finished`), or
 * when it fails.
 *
 * The copy of a piece into its slot is the price of the worker: cheap
 * alone (about 65 ms per GiB), but the bytes cross from this core to the
 * worker's, and with a socket, a file write and the other side of a
 * transfer sharing two cores it took 0.4 s of this thread per GiB (a
 * third of its time in a W8 upload, by perf). So a piece already written
 * to a file goes by reference instead (a FilePiece): the worker reads it
 * from the page cache straight into its wasm memory, through the adapter's
 * `openRef`/`readAt`/`closeRef` (a file descriptor it shares under Node, a
 * path it opens under Deno), and this thread copies nothing.
 */
import { blake3ModuleBytes } from "./blake3.ts";
import { type FilePiece, type HashThread, HASH_THREAD_QUEUE_MAX, PIECE_BYTES, REF_BYTES_MAX } from "./blake3parallel.ts";
import { assert, BLOB_HASH_SIZE } from "./format.ts";

// Control words (i32 index) and the regions of the shared memory (byte offsets).
const SUBMITTED = 0;
const DONE = 1;
const STOP = 2;
const WAKE = 3;
const CONTROL_BYTES = 64;
const Q = HASH_THREAD_QUEUE_MAX;
const COUNTERS_AT = CONTROL_BYTES;
const OFFSETS_AT = COUNTERS_AT + 8 * Q;
const NUMBERS_AT = OFFSETS_AT + 8 * Q;
const REFS_AT = NUMBERS_AT + 8 * Q;
const CVS_AT = REFS_AT + 4 * 3 * Q;
const STRINGS_AT = CVS_AT + BLOB_HASH_SIZE * Q;
const SLOTS_AT = Math.ceil((STRINGS_AT + REF_BYTES_MAX * Q) / 64) * 64;
const SHARED_BYTES = SLOTS_AT + PIECE_BYTES * Q;
// Per slot in refs: [file id, kind, string length]; kinds:
const REF_NONE = 0;
const REF_NUMBER = 1;
const REF_STRING = 2;

/**
 * How long the worker keeps a file open once it has no piece to hash: a
 * stream's next pieces usually come sooner, and opening costs a syscall.
 */
const HASH_THREAD_FILE_LINGER_MS = 100;

/**
 * The worker's code, in plain JavaScript. It expects, defined before it
 * (the adapter's prologue): `post(msg)`; `openRef(ref)`, which makes a
 * handle of a file reference (File.workerRef); `readAt(handle, bytes,
 * position)`, which fills `bytes` from the file or throws; and
 * `closeRef(handle)`. It is called as `handle(message)` once, with
 * `{ wasm, shared }`, and then serves pieces until STOP is set.
 */
export const HASH_THREAD_HANDLER_SOURCE = `
function handle(m) {
  const ctl = new Int32Array(m.shared, 0, ${CONTROL_BYTES / 4});
  let open;
  const closeOpen = () => {
    if (open === undefined) return;
    const h = open.handle;
    open = undefined;
    closeRef(h);
  };
  try {
    const abort = () => { throw new Error("BLAKE3 wasm abort in the hash thread"); };
    const ex = new WebAssembly.Instance(new WebAssembly.Module(m.wasm), { env: { abort } }).exports;
    const mem = new Uint8Array(ex.memory.buffer);
    const inputPtr = ex.INPUT_PTR.value, outPtr = ex.OUT_PTR.value;
    const input = mem.subarray(inputPtr, inputPtr + ${PIECE_BYTES});
    const counters = new Float64Array(m.shared, ${COUNTERS_AT}, ${Q});
    const offsets = new Float64Array(m.shared, ${OFFSETS_AT}, ${Q});
    const numbers = new Float64Array(m.shared, ${NUMBERS_AT}, ${Q});
    const refs = new Int32Array(m.shared, ${REFS_AT}, ${3 * Q});
    const strings = new Uint8Array(m.shared, ${STRINGS_AT}, ${REF_BYTES_MAX * Q});
    const cvs = new Uint8Array(m.shared, ${CVS_AT}, ${BLOB_HASH_SIZE * Q});
    const slots = new Uint8Array(m.shared, ${SLOTS_AT}, ${PIECE_BYTES * Q});
    const decoder = new TextDecoder();
    for (let n = 0; ; n++) {
      while (Atomics.load(ctl, ${SUBMITTED}) === n) {
        if (Atomics.load(ctl, ${STOP}) !== 0) return closeOpen();
        // A file stays open a moment for the stream's next piece; no file is held while idle.
        if (open === undefined || Atomics.wait(ctl, ${SUBMITTED}, n, ${HASH_THREAD_FILE_LINGER_MS}) === "timed-out") {
          closeOpen();
          Atomics.wait(ctl, ${SUBMITTED}, n);
        }
      }
      if (Atomics.load(ctl, ${STOP}) !== 0) return closeOpen();
      const slot = n % ${Q};
      const kind = refs[slot * 3 + 1];
      if (kind === ${REF_NONE}) {
        input.set(slots.subarray(slot * ${PIECE_BYTES}, (slot + 1) * ${PIECE_BYTES}));
      } else {
        const id = refs[slot * 3];
        if (open === undefined || open.id !== id) {
          closeOpen();
          const ref = kind === ${REF_NUMBER}
            ? numbers[slot]
            : decoder.decode(strings.slice(slot * ${REF_BYTES_MAX}, slot * ${REF_BYTES_MAX} + refs[slot * 3 + 2]));
          open = { id, handle: openRef(ref) };
        }
        readAt(open.handle, input, offsets[slot]);
      }
      ex.pieceCV(BigInt(counters[slot]));
      cvs.set(mem.subarray(outPtr, outPtr + ${BLOB_HASH_SIZE}), slot * ${BLOB_HASH_SIZE});
      Atomics.store(ctl, ${DONE}, n + 1);
      if (Atomics.compareExchange(ctl, ${WAKE}, 1, 0) === 1) post("wake");
    }
  } catch (e) {
    try {
      closeOpen();
    } catch {
      // the failure being reported matters more
    }
    post({ error: String((e && e.stack) || e) });
  }
}
`;

/** A HashThread over one worker, with what its adapter and `idleStopping` need. */
export type WorkerHashThread = HashThread & {
  /** The worker has pieces to hash, or `finished` is waiting; false once it failed. */
  readonly busy: boolean;
  /** It was stopped or died: it makes no more progress, and `recover` may take over what it holds. */
  readonly failed: boolean;
  /** It holds pieces whose values were not handed over (after a harvest). */
  readonly owes: boolean;
  /** Hands over the chaining values of the pieces hashed so far. */
  harvest(): void;
  /** A message from the worker. */
  receive(m: unknown): void;
  /** The worker died. */
  fail(e: unknown): void;
};

/** What an adapter gives for one worker. */
export interface HashWorkerPort {
  post(message: unknown): void;
  /** Stops the worker at once. */
  terminate(): void;
  /** Whether the worker keeps the process alive: only while this thread awaits it (Node's ref/unref; a no-op where a worker always does). */
  keepAlive(on: boolean): void;
}

/**
 * A HashThread over a worker the adapter started: `port` talks to it, and
 * the adapter calls the returned `receive` with each message from it and
 * `fail` if the worker dies.
 *
 * @example
 * const worker = new Worker(source, { eval: true });
 * const t = hashThreadOver({ post: (m) => worker.postMessage(m), terminate: () => worker.terminate(), keepAlive: (on) => on ? worker.ref() : worker.unref() });
 * worker.on("message", t.receive); worker.on("error", t.fail);
 */
export function hashThreadOver(port: HashWorkerPort): WorkerHashThread {
  const shared = new SharedArrayBuffer(SHARED_BYTES);
  const ctl = new Int32Array(shared, 0, CONTROL_BYTES / 4);
  const counters = new Float64Array(shared, COUNTERS_AT, Q);
  const offsets = new Float64Array(shared, OFFSETS_AT, Q);
  const numbers = new Float64Array(shared, NUMBERS_AT, Q);
  const refs = new Int32Array(shared, REFS_AT, 3 * Q);
  const strings = new Uint8Array(shared, STRINGS_AT, REF_BYTES_MAX * Q);
  const cvs = new Uint8Array(shared, CVS_AT, BLOB_HASH_SIZE * Q);
  const slots = new Uint8Array(shared, SLOTS_AT, PIECE_BYTES * Q);
  /** Each unharvested piece, oldest first: where its chaining value goes, and for a file piece how to read it back. */
  const pending: { onCV: (cv: Uint8Array | Error) => void; file: FilePiece | undefined }[] = [];
  let submitted = 0;
  let harvested = 0;
  let dead: Error | undefined;
  let waiter: { resolve(): void; reject(e: Error): void } | undefined;

  /** Hands the chaining values of finished pieces to their owners, in order. */
  const harvest = (): void => {
    const done = Atomics.load(ctl, DONE);
    for (; harvested < done; harvested++) {
      const at = (harvested % Q) * BLOB_HASH_SIZE;
      pending.shift()!.onCV(cvs.slice(at, at + BLOB_HASH_SIZE));
    }
  };
  /** Resolves the waiter once every piece is harvested; else asks the worker for a message after its next piece. */
  const settle = (): void => {
    if (waiter === undefined) return;
    Atomics.store(ctl, WAKE, 1);
    // After WAKE is set: a piece finished before it is seen here, one finished after it sends a message.
    harvest();
    if (harvested < submitted) return;
    const w = waiter;
    waiter = undefined;
    port.keepAlive(false);
    w.resolve();
  };
  const fail = (e: Error): void => {
    if (dead === undefined) {
      dead = e;
      // Whatever the failure, the worker makes no more progress: recover() then owns its slots.
      Atomics.store(ctl, STOP, 1);
      Atomics.notify(ctl, SUBMITTED);
      port.terminate();
    }
    if (waiter !== undefined) {
      const w = waiter;
      waiter = undefined;
      port.keepAlive(false);
      w.reject(dead);
    }
  };
  port.keepAlive(false);
  port.post({ wasm: blake3ModuleBytes(), shared });
  return {
    get queued() {
      return submitted - Atomics.load(ctl, DONE);
    },
    get failed() {
      return dead !== undefined;
    },
    get owes() {
      harvest();
      return harvested < submitted;
    },
    get busy() {
      // A dead worker is never busy: the idle stop may then release it (and its place under HASH_WORKERS_MAX).
      return dead === undefined && (waiter !== undefined || Atomics.load(ctl, DONE) < submitted);
    },
    submit(piece, counter, onCV) {
      if (dead !== undefined) throw dead;
      harvest();
      const file = piece instanceof Uint8Array ? undefined : piece;
      if (!((file !== undefined || (piece as Uint8Array).length === PIECE_BYTES) && submitted - harvested < Q)) {
        throw new Error("segstore internal assertion: a hash thread piece is whole and its slot is harvested");
      }
      const slot = submitted % Q;
      if (file === undefined) {
        slots.set(piece as Uint8Array, slot * PIECE_BYTES);
        refs[slot * 3 + 1] = REF_NONE;
      } else {
        assert(Number.isSafeInteger(file.offset) && file.offset >= 0, "a file piece's offset is a whole number");
        refs[slot * 3] = file.fileId;
        offsets[slot] = file.offset;
        if (typeof file.ref === "number") {
          numbers[slot] = file.ref;
          refs[slot * 3 + 1] = REF_NUMBER;
        } else {
          assert(file.ref.length <= REF_BYTES_MAX, "a file reference given as a string fits its slot");
          strings.set(file.ref, slot * REF_BYTES_MAX);
          refs[slot * 3 + 1] = REF_STRING;
          refs[slot * 3 + 2] = file.ref.length;
        }
      }
      counters[slot] = counter;
      pending.push({ onCV, file });
      submitted++;
      Atomics.store(ctl, SUBMITTED, submitted);
      Atomics.notify(ctl, SUBMITTED);
      return true;
    },
    harvest,
    recover(hashHere) {
      assert(dead !== undefined, "recover() only takes over from a thread that failed or was stopped");
      harvest();
      // DONE counts only pieces whose value is written, so the rest are re-hashed from their slots, in order.
      let scratch: Uint8Array | undefined;
      for (; harvested < submitted; harvested++) {
        const slot = harvested % Q;
        const { onCV, file } = pending.shift()!;
        if (file === undefined) {
          onCV(hashHere(slots.subarray(slot * PIECE_BYTES, (slot + 1) * PIECE_BYTES), counters[slot]!));
          continue;
        }
        // A file piece was never copied here: read it back (its owner's file is still open, or the read fails and says so).
        scratch ??= new Uint8Array(PIECE_BYTES);
        try {
          file.readBack(scratch);
        } catch (e) {
          onCV(e instanceof Error ? e : new Error(String(e)));
          continue;
        }
        onCV(hashHere(scratch, counters[slot]!));
      }
    },
    finished() {
      harvest();
      if (harvested === submitted) return Promise.resolve();
      if (dead !== undefined) return Promise.reject(dead);
      if (waiter !== undefined) throw new Error("segstore internal assertion: one finished() at a time on a hash thread");
      return new Promise<void>((resolve, reject) => {
        waiter = { resolve, reject };
        port.keepAlive(true);
        settle();
      });
    },
    stop() {
      fail(new Error("segstore: the hash thread was stopped"));
    },
    receive(m) {
      if (m === "wake") {
        settle();
        return;
      }
      const error = (m as { error?: unknown } | null)?.error;
      fail(new Error(`segstore: the hash thread failed: ${typeof error === "string" ? error : "a malformed message"}`));
    },
    fail(e) {
      fail(e instanceof Error ? e : new Error(`segstore: the hash thread died: ${String(e)}`));
    },
  };
}

/**
 * A worker left running by a hasher nobody finishes (a blob stream its
 * reader dropped without cancelling) is stopped after this long without a
 * piece: a Deno worker keeps its process alive, and a Node one holds its
 * thread and heap (~10 MiB) for the life of the process.
 */
export const HASH_THREAD_IDLE_STOP_MS = 1000;

/**
 * Hash workers running at once in this process, at most. Each costs a
 * thread and ~10 MiB; past two, more blobs hashed at once gain nothing a
 * machine's other cores would not already be doing. A hasher that finds
 * none free hashes on its own thread.
 */
export const HASH_WORKERS_MAX = 2;
let hashWorkersLive = 0;

/**
 * A HashThread that starts a worker (`startWorker`) on its first piece and
 * stops it once it sat HASH_THREAD_IDLE_STOP_MS with nothing to do, first
 * handing over the values it holds; the next piece starts another. The
 * check runs on a timer the adapter unrefs (`unrefTimer`), so it never
 * keeps a process alive by itself.
 *
 * @example
 * setHashThreadStarter(() => idleStopping(nodeHashWorker, (t) => (t as { unref(): void }).unref()));
 */
export function idleStopping(startWorker: () => WorkerHashThread, unrefTimer: (timer: unknown) => void): HashThread {
  let current: WorkerHashThread | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let lastUse = 0;
  let startFailed = false;
  /** The last worker stopped, for recover(). */
  let retired: WorkerHashThread | undefined;
  const check = (): void => {
    timer = undefined;
    if (current === undefined) return;
    const quiet = performance.now() - lastUse;
    if (current.busy || quiet < HASH_THREAD_IDLE_STOP_MS) {
      schedule(Math.max(HASH_THREAD_IDLE_STOP_MS - quiet, 10));
      return;
    }
    current.harvest();
    release();
  };
  const release = (): void => {
    if (current === undefined) return;
    current.stop();
    retired = current;
    current = undefined;
    hashWorkersLive--;
    assert(hashWorkersLive >= 0, "hash workers counted down below zero");
  };
  const schedule = (ms: number): void => {
    timer = setTimeout(check, ms);
    unrefTimer(timer);
  };
  const touch = (): void => {
    lastUse = performance.now();
    if (timer === undefined) schedule(HASH_THREAD_IDLE_STOP_MS);
  };
  return {
    get queued() {
      return current?.queued ?? 0;
    },
    submit(piece, counter, onCV) {
      if (current === undefined) {
        if (startFailed || hashWorkersLive >= HASH_WORKERS_MAX) return false;
        try {
          current = startWorker();
        } catch {
          // No workers here (a sandbox, a runtime without them): this hasher stays on its own thread.
          startFailed = true;
          return false;
        }
        hashWorkersLive++;
      }
      touch();
      return current.submit(piece, counter, onCV);
    },
    recover(hashHere) {
      // Workers stopped or dead while they held pieces still hold their copies; the callbacks place each value by
      // its piece number, so the order of the two does not matter.
      if (retired?.owes) retired.recover(hashHere);
      if (current?.failed) current.recover(hashHere);
    },
    async finished() {
      // A worker stopped for idleness handed everything over first; one that died holding pieces is recover()'s.
      if (retired?.owes) throw new Error("segstore: a stopped hash thread held pieces");
      if (current === undefined) return;
      touch();
      await current.finished();
    },
    stop() {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      release();
    },
  };
}
