'use strict';
// Bounded waits for the tests. Every bound is a multiple of WAIT_MS, which scales with
// TIDINGS_TEST_TIMEOUT_SCALE like the Python tests' TIMEOUT (5 s at scale 1).

const WAIT_MS = 5000 * Number(process.env.TIDINGS_TEST_TIMEOUT_SCALE || 1);

// Resolves once predicate() is true; rejects naming `what` after `ms`.
function until(what, predicate, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const check = () => {
      let value;
      try {
        value = predicate();
      } catch (error) {
        reject(error);
        return;
      }
      if (value) resolve(value);
      else if (Date.now() > deadline) reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      else setTimeout(check, 5);
    };
    check();
  });
}

// A promise with its resolve function outside, for "answer when the test says so".
function deferred() {
  let resolve;
  const promise = new Promise((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

module.exports = { WAIT_MS, until, deferred };
