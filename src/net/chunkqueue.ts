/**
 * A hand-off of byte chunks from a producer that gets them pushed (the
 * server reading upload frames off a socket) to a consumer that pulls (the
 * blob writer's `for await`). It holds at most one chunk besides the one
 * the consumer is working on: `push` resolves once the consumer has taken
 * the chunk, so the producer reads the next frame off the socket while
 * the consumer hashes and writes the last one, and waits (and through it
 * the socket) when the consumer falls behind. A pushed chunk may be a view
 * into a buffer the producer wants back: its `release` is called once the
 * consumer has finished with it (it came back for the next chunk, or the
 * stream ended); after a failure it is never called, as the consumer may
 * still hold the chunk.
 *
 * @example
 * const q = new ChunkQueue();
 * const done = putBlobStage(store, id, q);   // pulls
 * await q.push(bytes, () => reuse(bytes));   // pushes
 * q.end();
 * await done;
 */
export class ChunkQueue implements AsyncIterable<Uint8Array> {
  #chunk: Uint8Array | undefined;
  #chunkRelease: (() => void) | undefined;
  /** Resolves the producer's push once the consumer takes its chunk. */
  #taken: (() => void) | undefined;
  /** The release of the chunk the consumer is working on. */
  #inUseRelease: (() => void) | undefined;
  /** The consumer waiting for a chunk. */
  #waiting: ((r: IteratorResult<Uint8Array>) => void) | undefined;
  #waitingFail: ((e: unknown) => void) | undefined;
  #ended = false;
  #error: unknown;
  #failed = false;

  /** Hands over `chunk`; resolves once the consumer took it (or the queue failed or was abandoned). */
  push(chunk: Uint8Array, release?: () => void): Promise<void> {
    if (this.#ended || this.#failed) return Promise.resolve();
    if (this.#chunk !== undefined || this.#taken !== undefined) {
      throw new Error("segstore internal assertion: ChunkQueue.push before the last push resolved");
    }
    return new Promise((resolve) => {
      if (this.#waiting !== undefined) {
        const w = this.#waiting;
        this.#waiting = undefined;
        this.#waitingFail = undefined;
        this.#inUseRelease = release;
        resolve();
        w({ done: false, value: chunk });
      } else {
        this.#chunk = chunk;
        this.#chunkRelease = release;
        this.#taken = resolve;
      }
    });
  }

  /** No more chunks: the consumer's loop ends after the last one. */
  end(): void {
    if (this.#ended || this.#failed) return;
    this.#ended = true;
    if (this.#waiting !== undefined && this.#chunk === undefined) {
      const w = this.#waiting;
      this.#waiting = undefined;
      w({ done: true, value: undefined });
    }
  }

  /** Makes the consumer's next pull throw `error`, and releases a waiting producer. */
  fail(error: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#error = error;
    this.#chunk = undefined;
    this.#chunkRelease = undefined;
    this.#inUseRelease = undefined;
    this.#taken?.();
    this.#taken = undefined;
    if (this.#waitingFail !== undefined) {
      const f = this.#waitingFail;
      this.#waiting = undefined;
      this.#waitingFail = undefined;
      f(error);
    }
  }

  #next(): Promise<IteratorResult<Uint8Array>> {
    // Coming back for more means the last chunk is done with.
    const done = this.#inUseRelease;
    this.#inUseRelease = undefined;
    done?.();
    if (this.#failed) return Promise.reject(this.#error);
    if (this.#chunk !== undefined) {
      const value = this.#chunk;
      this.#chunk = undefined;
      this.#inUseRelease = this.#chunkRelease;
      this.#chunkRelease = undefined;
      const taken = this.#taken;
      this.#taken = undefined;
      taken?.();
      return Promise.resolve({ done: false, value });
    }
    if (this.#ended) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => {
      this.#waiting = resolve;
      this.#waitingFail = reject;
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return {
      next: () => this.#next(),
      return: () => {
        // The consumer stopped early (its own error): release the producer; later pushes are dropped.
        this.fail(new Error("the blob writer stopped reading this upload"));
        return Promise.resolve({ done: true, value: undefined });
      },
    };
  }
}
