/**
 * A hand-off of byte chunks from a producer that gets them pushed (the
 * server reading upload frames off a socket) to a consumer that pulls (the
 * blob writer's `for await`). It holds at most one chunk: `push` resolves
 * only once the consumer has taken that chunk and come back for the next,
 * so the producer (and through it the socket) waits for the disk. A pushed
 * chunk may be a view into a buffer the producer reuses after `push`
 * resolves: the consumer has finished with it by then.
 *
 * @example
 * const q = new ChunkQueue();
 * const done = putBlobStage(store, id, q);   // pulls
 * await q.push(bytes); q.end();              // pushes
 * await done;
 */
export class ChunkQueue implements AsyncIterable<Uint8Array> {
  #chunk: Uint8Array | undefined;
  /** Resolves the producer's push once the consumer asks for the next chunk. */
  #taken: (() => void) | undefined;
  /** The consumer waiting for a chunk. */
  #waiting: ((r: IteratorResult<Uint8Array>) => void) | undefined;
  #waitingFail: ((e: unknown) => void) | undefined;
  #ended = false;
  #error: unknown;
  #failed = false;

  /** Hands over `chunk`; resolves once it has been consumed (or the queue failed or was abandoned). */
  push(chunk: Uint8Array): Promise<void> {
    if (this.#ended || this.#failed) return Promise.resolve();
    if (this.#chunk !== undefined) throw new Error("segstore internal assertion: ChunkQueue.push before the last push resolved");
    return new Promise((resolve) => {
      this.#taken = resolve;
      if (this.#waiting !== undefined) {
        const w = this.#waiting;
        this.#waiting = undefined;
        this.#waitingFail = undefined;
        w({ done: false, value: chunk });
      } else {
        this.#chunk = chunk;
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
    const taken = this.#taken;
    this.#taken = undefined;
    taken?.();
    if (this.#failed) return Promise.reject(this.#error);
    if (this.#chunk !== undefined) {
      const value = this.#chunk;
      this.#chunk = undefined;
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
