/**
 * Fuzzing, short run (npm test): a few thousand seeded random and mutated
 * inputs per decoder that reads untrusted bytes (segment scanner, index
 * checkpoint loader, hints decoder, wire protocol); each must raise only its
 * documented error class, never hang, never allocate for an unverified
 * size, and still decode valid input afterwards. The contracts and the
 * generators are in tests/_support/fuzz-targets.ts; `npm run fuzz` runs the
 * long version (scripts/fuzz.mjs, 100,000+ inputs per decoder).
 *
 * SEGSTORE_FUZZ_COUNT=N and SEGSTORE_FUZZ_SEED=S change the run (to replay
 * a failure the long run printed, pass its seed).
 */
import process from "node:process";
import { test } from "uvu";
import * as assert from "uvu/assert";
import {
  claimDecoders, decodeClaimCases, fuzzRun, fuzzTargets, refusedBeforeAllocating,
} from "./_support/fuzz-targets.ts";

/** Inputs per decoder in the short run: a few seconds in all. */
const FUZZ_COUNT = Number(process.env.SEGSTORE_FUZZ_COUNT ?? 3000);
const FUZZ_SEED = Number(process.env.SEGSTORE_FUZZ_SEED ?? 1);

for (const target of fuzzTargets()) {
  test(`${target.name}: ${FUZZ_COUNT} random and mutated inputs raise only the documented errors, end quickly, and leave it working`, () => {
    const stats = fuzzRun(target, { seed: FUZZ_SEED, count: FUZZ_COUNT });
    assert.is(stats.inputs, FUZZ_COUNT);
    // Both outcomes must be common, or the generator is not reaching the decoder's depths.
    assert.ok(stats.accepted >= FUZZ_COUNT / 20, `${target.name}: ${stats.accepted} accepted of ${FUZZ_COUNT}`);
    assert.ok(stats.rejected >= FUZZ_COUNT / 20, `${target.name}: ${stats.rejected} rejected of ${FUZZ_COUNT}`);
  });
}

for (const decoder of claimDecoders()) {
  test(`${decoder.name}: a few bytes claiming a huge array, map, string or binary are refused without allocating for the claim`, () => {
    for (const c of decodeClaimCases()) {
      const error = decoder.decode(c.bytes);
      assert.ok(error !== undefined, `${decoder.name}: ${c.name} (${c.bytes.length} bytes) decoded`);
      assert.ok(
        refusedBeforeAllocating(c.name, error),
        `${decoder.name}: ${c.name} (${c.bytes.length} bytes) was not refused by a length limit, so it was allocated for: ${error.message}`,
      );
    }
  });
}

test.run();
