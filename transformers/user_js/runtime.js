// Host side of a user transformation context: installed once per V8 context, before the user's code.
// The whole batch crosses the boundary as one JSON string each way; the per-event loop runs here.
// Memory is limited by the worker process (see worker.py), not here: a JavaScript-side guard can be
// bypassed. This file only recognises the errors V8 raises when the process refuses memory.
(function () {
  "use strict";
  const g = globalThis;
  const parse = JSON.parse;
  const stringify = JSON.stringify;
  const isArray = Array.isArray;
  // Intrinsics the runtime needs after the user's code has run, taken before it can replace them.
  const call = Function.prototype.call;
  const uncurry = (fn) => call.bind(fn);
  const join = uncurry(Array.prototype.join);
  const push = uncurry(Array.prototype.push);
  const indexOf = uncurry(Array.prototype.indexOf);
  const split = uncurry(String.prototype.split);
  const strIndexOf = uncurry(String.prototype.indexOf);
  const slice = uncurry(String.prototype.slice);
  const charCodeAt = uncurry(String.prototype.charCodeAt);
  const regexpTest = uncurry(RegExp.prototype.test);
  const mapGet = uncurry(Map.prototype.get);
  const mapSet = uncurry(Map.prototype.set);
  const mapHas = uncurry(Map.prototype.has);
  const promiseThen = uncurry(Promise.prototype.then);
  const promiseResolve = Promise.resolve.bind(Promise);
  const promiseAll = Promise.all.bind(Promise);
  const ErrorIntrinsic = Error;
  const RangeErrorIntrinsic = RangeError;
  const MapIntrinsic = Map;
  const StringIntrinsic = String;
  const PENDING = "__sluice_pending__";
  const IDLE = "__sluice_idle__";
  const USER_SCRIPT = "user_transformation";
  const MAX_LOG_LINES = 10000;
  const MAX_LOG_CHARS = 1 << 20;
  const ENCODE_ERROR = "transformation output cannot be encoded as JSON: ";
  // What V8 says when the process refuses memory to an ArrayBuffer, a typed array, a resize or grow,
  // or a WebAssembly memory.
  const MEMORY_MESSAGE = /allocation failed|out of memory|could not allocate memory|unable to grow/i;
  const FRAME = /^\s+at /;

  // Only ECMAScript built-ins plus log and metadata: take away what the embedder added (timers) and
  // what can run code outside our call (Atomics.waitAsync, WebAssembly's async compiler,
  // FinalizationRegistry callbacks).
  g.setTimeout = undefined;
  g.clearTimeout = undefined;
  g.__timer_manager = undefined;
  if (typeof Atomics === "object") delete Atomics.waitAsync;
  delete g.WebAssembly;
  delete g.FinalizationRegistry;
  // The worker starts V8 with gc() exposed for the runtime alone.
  const collectGarbage = typeof g.gc === "function" ? g.gc : () => {};
  g.gc = undefined; // not configurable: it can only be overwritten

  let logs = [];
  let logChars = 0;
  let metadataById = new MapIntrinsic();
  let mode = null; // "event" | "batch"
  let entry = null;
  let pending = null;
  let memoryHit = false; // an allocation was refused during this call

  const show = (value) => {
    try {
      if (typeof value === "string") return value;
      if (value instanceof ErrorIntrinsic) return StringIntrinsic(value);
      if (value !== null && typeof value === "object") {
        try {
          const text = stringify(value);
          if (typeof text === "string") return text;
        } catch (e) {
          // fall through to String()
        }
      }
      return StringIntrinsic(value);
    } catch (e) {
      return "[value that cannot be shown]";
    }
  };

  const log = function log(...args) {
    if (logs.length >= MAX_LOG_LINES || logChars >= MAX_LOG_CHARS) return;
    const parts = [];
    for (let i = 0; i < args.length; i++) push(parts, show(args[i]));
    const line = join(parts, " ");
    logChars += line.length;
    push(logs, line);
  };

  const metadata = function metadata(event) {
    let id;
    try {
      id = event !== null && typeof event === "object" ? event.messageId : undefined;
    } catch (e) {
      id = undefined;
    }
    const found = mapGet(metadataById, id);
    return found === undefined ? {} : found;
  };

  Object.defineProperty(g, "log", { value: log, writable: false, configurable: false, enumerable: false });
  Object.defineProperty(g, "metadata", { value: metadata, writable: false, configurable: false, enumerable: false });

  const isMemoryError = (err) => {
    try {
      return err instanceof RangeErrorIntrinsic && regexpTest(MEMORY_MESSAGE, StringIntrinsic(err.message));
    } catch (e) {
      return false;
    }
  };

  // "Error: message" plus only the frames that point into the user's code. Never throws: what the
  // user threw may have throwing getters or a throwing toString.
  const describeUnsafe = (err) => {
    if (err instanceof ErrorIntrinsic || (err !== null && typeof err === "object" && typeof err.stack === "string")) {
      const stack = typeof err.stack === "string" ? err.stack : StringIntrinsic(err);
      const lines = split(stack, "\n");
      const head = [];
      const frames = [];
      for (let i = 0; i < lines.length; i++) {
        const line = lines[i];
        if (regexpTest(FRAME, line)) {
          if (strIndexOf(line, USER_SCRIPT + ":") !== -1) {
            push(frames, join(split(line, USER_SCRIPT + ":"), "base transformation:"));
          }
        } else if (frames.length === 0) {
          push(head, line);
        }
      }
      for (let i = 0; i < frames.length; i++) push(head, frames[i]);
      return join(head, "\n");
    }
    if (err !== null && typeof err === "object") {
      try {
        const text = stringify(err);
        if (typeof text === "string") return text;
      } catch (e) {
        // fall through to String()
      }
    }
    return StringIntrinsic(err);
  };
  const describe = (err) => {
    try {
      return describeUnsafe(err);
    } catch (e) {
      return "[a thrown value that cannot be shown]";
    }
  };

  // An event's error as a JSON fragment; "m" marks an allocation the process refused.
  const errorResult = (err, prefix) => {
    const memory = isMemoryError(err);
    if (memory) memoryHit = true;
    const text = (prefix || "") + describe(err);
    return memory ? stringify({ e: text, m: 1 }) : stringify({ e: text });
  };
  const messageResult = (message) => stringify({ e: message });

  const isEventObject = (value) => value !== null && typeof value === "object" && !isArray(value);

  // One output object as JSON text, or an error fragment (starting with '{"e"').
  const encodeOutput = (item) => {
    let text;
    try {
      text = stringify(item);
    } catch (err) {
      return { error: errorResult(err, ENCODE_ERROR) };
    }
    if (typeof text !== "string") return { error: messageResult(ENCODE_ERROR + "toJSON() returned undefined") };
    if (charCodeAt(text, 0) !== 123) return { error: messageResult(ENCODE_ERROR + "its JSON form is not an object") };
    return { text };
  };

  // One input's transformEvent result as a JSON fragment: {"o": [...]} or {"e": "..."}.
  const eventResult = (value) => {
    try {
      if (value === null || value === undefined) return '{"o":[]}';
      if (isArray(value)) {
        const texts = [];
        const n = value.length;
        for (let i = 0; i < n; i++) {
          const item = value[i];
          if (!isEventObject(item)) {
            return messageResult("returned event in events array from transformEvent(event) is not an object");
          }
          const out = encodeOutput(item);
          if (out.error !== undefined) return out.error;
          push(texts, out.text);
        }
        return '{"o":[' + join(texts, ",") + "]}";
      }
      if (!isEventObject(value)) return messageResult("returned event from transformEvent(event) is not an object");
      const out = encodeOutput(value);
      return out.error !== undefined ? out.error : '{"o":[' + out.text + "]}";
    } catch (err) {
      return errorResult(err);
    }
  };

  // After a refused allocation, the garbage that filled the limit is collected before the answer
  // leaves: the worker needs a little memory to take it.
  const head = () => {
    if (!memoryHit) return "{";
    collectGarbage();
    return '{"m":1,';
  };
  const batchError = (err) => {
    const memory = isMemoryError(err);
    if (memory) collectGarbage();
    // "m" first: the worker looks for it at the start of the answer.
    return stringify(memory ? { m: 1, b: describe(err), l: logs } : { b: describe(err), l: logs });
  };
  const finish = (parts) => head() + '"r":[' + join(parts, ",") + '],"l":' + stringify(logs) + "}";

  // transformBatch's outputs attributed to inputs by messageId; the rest go to the first input.
  const batchResult = (value, events, inputIndex) => {
    if (!isArray(value)) {
      return stringify({ b: "returned events from transformBatch(event) is not an array", l: logs });
    }
    const count = events.length;
    const outputs = [];
    const errors = [];
    for (let i = 0; i < count; i++) {
      push(outputs, []);
      push(errors, null);
    }
    const n = value.length;
    for (let j = 0; j < n; j++) {
      const item = value[j];
      if (!isEventObject(item)) {
        if (count) errors[0] = messageResult("returned event in events array from transformBatch(events) is not an object");
        continue;
      }
      let id;
      try {
        id = item.messageId;
      } catch (e) {
        id = undefined;
      }
      const found = mapGet(inputIndex, id);
      const target = found === undefined ? 0 : found;
      if (!count) continue;
      const out = encodeOutput(item);
      if (out.error !== undefined) {
        if (errors[target] === null) errors[target] = out.error;
      } else {
        push(outputs[target], out.text);
      }
    }
    const parts = [];
    for (let i = 0; i < count; i++) {
      const o = '"o":[' + join(outputs[i], ",") + "]";
      // An error fragment is '{"e":...}' (maybe with "m"): the outputs go in front of its fields.
      push(parts, errors[i] === null ? "{" + o + "}" : "{" + o + "," + slice(errors[i], 1));
    }
    return finish(parts);
  };

  // Evaluates the module body; answers {"mode"} or {"error"} as JSON so the host never parses V8 messages.
  const load = function (getExports, exportedNames) {
    let exportsObject;
    try {
      exportsObject = getExports();
    } catch (err) {
      return stringify(isMemoryError(err) ? { error: describe(err), m: 1 } : { error: describe(err) });
    }
    try {
      const found = exportedNames.filter((name) => exportsObject[name] !== undefined);
      for (const name of ["transformEvent", "transformBatch"]) {
        if (typeof exportsObject[name] === "function" && indexOf(found, name) === -1) push(found, name);
      }
      const hasEvent = typeof exportsObject.transformEvent === "function";
      const hasBatch = typeof exportsObject.transformBatch === "function";
      if (hasEvent === hasBatch) {
        return stringify({
          error: "Expected one of transformEvent,transformBatch. Found " + (found.length ? join(found, ",") : "none"),
        });
      }
      mode = hasEvent ? "event" : "batch";
      entry = hasEvent ? exportsObject.transformEvent : exportsObject.transformBatch;
    } catch (err) {
      return stringify({ error: describe(err) });
    }
    return stringify({ mode });
  };

  // Reads `.then` without letting a throwing getter escape: a throw makes the value a failure.
  const thenOf = (value) => {
    if (value === null || typeof value !== "object") return undefined;
    const then = value.then;
    return typeof then === "function" ? then : undefined;
  };

  const runBatch = (events, inputIndex) => {
    let value;
    try {
      value = entry(events, metadata);
      if (thenOf(value) === undefined) return batchResult(value, events, inputIndex);
    } catch (err) {
      return batchError(err);
    }
    const state = { out: null };
    pending = state;
    promiseThen(
      promiseResolve(value),
      (v) => {
        try {
          state.out = batchResult(v, events, inputIndex);
        } catch (err) {
          state.out = batchError(err);
        }
      },
      (err) => { state.out = batchError(err); },
    );
    return PENDING;
  };

  const runEvents = (events) => {
    const parts = new Array(events.length);
    let waiting = null;
    for (let i = 0; i < events.length; i++) {
      let value;
      let promise;
      try {
        value = entry(events[i], metadata);
        if (thenOf(value) !== undefined) promise = promiseResolve(value);
      } catch (err) {
        parts[i] = errorResult(err);
        continue;
      }
      if (promise === undefined) {
        parts[i] = eventResult(value);
        continue;
      }
      if (waiting === null) waiting = [];
      push(waiting, promiseThen(
        promise,
        (v) => { parts[i] = eventResult(v); },
        (err) => { parts[i] = errorResult(err); },
      ));
    }
    if (waiting === null) return finish(parts);
    const state = { out: null };
    pending = state;
    promiseThen(
      promiseAll(waiting),
      () => {
        try {
          state.out = finish(parts);
        } catch (err) {
          state.out = batchError(err);
        }
      },
      (err) => { state.out = batchError(err); },
    );
    return PENDING;
  };

  const run = function (payload) {
    const input = parse(payload);
    const events = input.events;
    const metas = input.metadata;
    logs = [];
    logChars = 0;
    pending = null;
    memoryHit = false;
    metadataById = new MapIntrinsic();
    const inputIndex = new MapIntrinsic();
    for (let i = 0; i < events.length; i++) {
      const meta = metas[i] || {};
      const ev = events[i];
      const id = meta.messageId !== undefined ? meta.messageId : ev !== null && typeof ev === "object" ? ev.messageId : undefined;
      if (id !== undefined && !mapHas(metadataById, id)) {
        mapSet(metadataById, id, meta);
        mapSet(inputIndex, id, i);
      }
    }
    try {
      return mode === "batch" ? runBatch(events, inputIndex) : runEvents(events);
    } catch (err) {
      // Only the runtime's own work can get here (joining a result too large for a string, say).
      return batchError(err);
    }
  };

  // Called after the microtask checkpoint that follows run(): the settled result, PENDING if a
  // promise can never settle (nothing outside this call can resolve it: no timers, no I/O), or IDLE
  // when run() answered synchronously. Always called, so that continuations the user left running
  // are bounded by this batch's time limit rather than blocking the next one.
  const collect = function () {
    if (pending === null) return IDLE;
    if (pending.out === null) return PENDING;
    const out = pending.out;
    pending = null;
    return out;
  };

  const host = Object.freeze({ load, run, collect, describe });
  Object.defineProperty(g, "__sluice", { value: host, writable: false, configurable: false, enumerable: false });
})();
//# sourceURL=sluice_runtime
