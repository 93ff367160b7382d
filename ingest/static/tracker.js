/*! vidpulse tracker: records which parts of each <video> a viewer actually played and
 * sends them to the vidpulse ingest (POST /v1/events). Plain ES2017, no dependencies.
 * Usage, options, what is sent when: docs/tracker.md. Wire contract: docs/events.md.
 *
 * Decisions worth knowing before changing this file:
 * - A session is one view of one video on one page view. session_start goes out at the
 *   first play once the duration is known; session_end on pagehide or stop(). `ended`
 *   only closes the played range and flushes: the session stays open, so a replay adds
 *   to the same view. After a session_end (page restored from the back/forward cache)
 *   the next play starts a new session.
 * - Played ranges come from timeupdate: a forward step no larger than the playback rate
 *   allows for the wall time since the previous sample is "played"; any other jump, and
 *   everything between `seeking` and `seeked`, is a seek and never counts as watched.
 * - A scrub is reported as one seek (debounced). Seeks and rate changes before the first
 *   play only set the session up (e.g. a resume position) and are not sent as events.
 * - Events queue in memory, mirrored to localStorage, and go out as one JSON array at
 *   most BATCH_DELAY after the first queued one (URGENT_DELAY after pause, seek,
 *   complete, session_end). An event leaves the queue only when the server answered it:
 *   2xx (accepted, duplicate or listed as rejected) or a 4xx that will never change.
 * - A beacon cannot tell whether it arrived: what sendBeacon sent stays stored, marked
 *   "beaconed", and is sent again on the next page load; the server dedupes by event_id.
 */
(function (window, document) {
  "use strict";
  if (window.vidpulse && window.vidpulse.version) return; // included twice: the first copy wins

  const VERSION = "1.0.0";
  const ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;
  const VIDEO_ATTR = "data-vidpulse-video-id";
  const MILESTONES = [25, 50, 75, 90];
  const QUEUE_KEY = "vidpulse:queue";
  const VIEWER_KEY = "vidpulse:viewer";
  const MAX_STORED_EVENTS = 1000;
  const MAX_STORED_CHARS = 200 * 1024;
  const MAX_BATCH_EVENTS = 500; // server limit per request
  const MAX_BATCH_BYTES = 240 * 1024; // server limit is 256 KiB; keep some headroom
  const MAX_KEEPALIVE_BYTES = 60 * 1024; // browsers cap in-flight beacon/keepalive bodies at 64 KiB
  const MAX_RANGES = 100; // server limit of `played` ranges per event
  const BATCH_DELAY = 1500;
  const URGENT_DELAY = 200;
  const EAGER_COUNT = 50; // this many waiting events are sent at once
  const SEEK_SETTLE = 400; // dragging the scrubber fires many seeks; report them as one
  const BACKOFF_MIN = 1000;
  const BACKOFF_MAX = 60000;
  const FETCH_TIMEOUT = 20000;
  const MAX_AGE = 7 * 86400000 - 3600000; // the server refuses ts older than 7 days

  const noop = () => {};
  const r3 = (x) => Math.round(x * 1000) / 1000;
  const positive = (x) => typeof x === "number" && isFinite(x) && x > 0;
  const encoder = typeof TextEncoder === "function" ? new TextEncoder() : null;
  const byteLength = (text) => (encoder ? encoder.encode(text).length : text.length * 3);

  // ---- configuration, from our own <script> tag -------------------------------------
  // currentScript is only set while this file first runs, so it is read right away.
  let script = document.currentScript;
  if (!script) {
    const found = document.querySelectorAll('script[src*="tracker.js"]');
    script = found[found.length - 1] || null;
  }
  const config = (function (el) {
    const attr = (name) => (el ? el.getAttribute(name) : null);
    const number = (name, fallback, min, max) => {
      const n = parseFloat(attr(name));
      return n >= min && n <= max ? n : fallback;
    };
    let endpoint = attr("data-endpoint");
    try {
      // An explicit endpoint resolves against the page, the default against the script.
      endpoint = endpoint
        ? new URL(endpoint, document.baseURI).href
        : new URL("/v1/events", el && el.src ? el.src : window.location.href).href;
    } catch (_) {
      endpoint = endpoint || "/v1/events";
    }
    const debug = attr("data-debug");
    return {
      endpoint: endpoint,
      threshold: number("data-completion-threshold", 0.9, 0.01, 1),
      progressInterval: number("data-progress-interval", 15, 1, 3600),
      debug: debug !== null && debug !== "false" && debug !== "0",
    };
  })(script);

  const log = (...args) => {
    if (config.debug && window.console) console.debug("[vidpulse]", ...args);
  };
  const warn = (message) => {
    try { console.warn("[vidpulse] " + message); } catch (_) { /* no console */ }
  };
  // Every entry point from the browser or the host page goes through guard(): a bug in
  // here must never surface as an exception in someone else's page.
  const guard = (fn) => function () {
    try {
      return fn.apply(this, arguments);
    } catch (err) {
      log("internal error", err);
    }
  };

  // ---- storage: localStorage when usable, else memory (private mode, sandboxed frames)
  const store = (function () {
    let ls = null;
    const memory = {};
    try {
      ls = window.localStorage;
      ls.setItem("vidpulse:probe", "1");
      ls.removeItem("vidpulse:probe");
    } catch (_) {
      ls = null;
    }
    return {
      persistent: !!ls,
      get: (key) => {
        try { return ls ? ls.getItem(key) : key in memory ? memory[key] : null; } catch (_) { return null; }
      },
      set: (key, value) => {
        try { if (ls) ls.setItem(key, value); else memory[key] = value; return true; } catch (_) { return false; }
      },
      remove: (key) => {
        try { if (ls) ls.removeItem(key); else delete memory[key]; } catch (_) { /* ignore */ }
      },
    };
  })();

  // ---- ids ----------------------------------------------------------------------------
  function uuid() {
    const c = window.crypto;
    if (c && typeof c.randomUUID === "function") {
      try { return c.randomUUID(); } catch (_) { /* only in secure contexts */ }
    }
    let b = [];
    if (c && typeof c.getRandomValues === "function") b = c.getRandomValues(new Uint8Array(16));
    else for (let i = 0; i < 16; i++) b.push(Math.floor(Math.random() * 256));
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex = "";
    for (let i = 0; i < 16; i++) {
      hex += (i === 4 || i === 6 || i === 8 || i === 10 ? "-" : "") + (b[i] + 0x100).toString(16).slice(1);
    }
    return hex;
  }

  let anonymousId = null;
  function anonymousViewer() {
    if (!anonymousId) {
      const stored = store.get(VIEWER_KEY);
      // Anonymous ids start with anon-: the ingest asks no signature for them.
      anonymousId = stored && ID_RE.test(stored) && stored.startsWith("anon-") ? stored : "anon-" + uuid();
      if (anonymousId !== stored) store.set(VIEWER_KEY, anonymousId);
    }
    return anonymousId;
  }

  // ---- media ranges: sorted, disjoint [start, end] pairs --------------------------------
  function addRange(list, a, b) {
    let i = 0;
    while (i < list.length && list[i][1] < a) i++;
    let j = i;
    for (; j < list.length && list[j][0] <= b; j++) {
      a = Math.min(a, list[j][0]);
      b = Math.max(b, list[j][1]);
    }
    list.splice(i, j - i, [a, b]);
  }
  const rangesLength = (list) => list.reduce((n, r) => n + r[1] - r[0], 0);

  // ---- sessions -----------------------------------------------------------------------
  const sessions = new Map(); // <video> -> session; stop() removes the entry
  const debugSessions = []; // debug mode only, for window.vidpulse._debug
  const debugEvents = []; // debug mode only: the last events built
  const pick = (...values) => {
    const v = values.find((x) => x != null && x !== "");
    return v === undefined ? null : String(v);
  };

  function track(video, options, auto) {
    if (!video || video.tagName !== "VIDEO") {
      warn("track() needs a <video> element");
      return noop;
    }
    const existing = sessions.get(video);
    if (existing) return existing.stop; // never track one element twice
    const o = options || {};
    const data = (name) => video.getAttribute("data-vidpulse-" + name);
    const videoId = pick(o.videoId, data("video-id"));
    const namedViewer = pick(o.viewerId, data("viewer-id"));
    const viewerId = namedViewer || anonymousViewer();
    if (!videoId || !ID_RE.test(videoId) || !ID_RE.test(viewerId)) {
      warn(`not tracking: ids must be 1-128 chars of [A-Za-z0-9._:-], got video ${videoId}, viewer ${viewerId}`);
      return noop;
    }
    const ctx = {};
    const course = pick(o.courseId, data("course-id"));
    const lesson = pick(o.lessonId, data("lesson-id"));
    if (course) ctx.course_id = course.slice(0, 128);
    if (lesson) ctx.lesson_id = lesson.slice(0, 128);
    if (o.isPreview === true || (o.isPreview == null && data("is-preview") === "true")) ctx.is_preview = true;
    // The platform's signature of a logged-in viewer id (see the ingest's docs/security.md).
    const viewerSig = pick(o.viewerSig, data("viewer-sig"));
    if (namedViewer && viewerSig) ctx.viewer_sig = viewerSig;

    const s = { video: video, videoId: videoId, viewerId: viewerId, ctx: ctx, auto: !!auto, listeners: [] };
    resetSession(s);
    const handlers = {
      play: onPlay, playing: sample, timeupdate: sample, pause: onPause, ended: onEnded,
      seeking: onSeeking, seeked: onSeeked, ratechange: onRateChange,
      loadedmetadata: onDuration, durationchange: onDuration, emptied: onEmptied,
    };
    Object.keys(handlers).forEach((type) => {
      const fn = guard(() => handlers[type](s));
      video.addEventListener(type, fn);
      s.listeners.push([type, fn]);
    });
    s.stop = guard(() => {
      stopSession(s);
      return drain(true);
    });
    sessions.set(video, s);
    if (config.debug) debugSessions.push(s);
    log("tracking", videoId, s.sessionId);
    if (!video.paused) onPlay(s); // autoplay began before we were attached
    return s.stop;
  }

  function resetSession(s) {
    clearInterval(s.progressTimer);
    clearTimeout(s.seekTimer);
    Object.assign(s, {
      sessionId: uuid(), started: false, closed: false, firstPlay: null, duration: null,
      playing: false, seeking: false, seek: null, lastPos: null, lastWall: 0,
      known: s.video.currentTime || 0, rate: s.video.playbackRate || 1, sentRate: 1,
      pending: [], coverage: [], milestones: {}, completed: false, progressTimer: null, seekTimer: null,
    });
  }

  function durationOf(s) {
    if (positive(s.video.duration)) s.duration = s.video.duration;
    return s.duration; // null while unknown, and for live streams (Infinity)
  }

  // Builds one wire event and queues it. Events needing duration_s are skipped while it is
  // unknown. `fields` may override ts and position_s.
  function emit(s, type, fields, needsDuration, urgent) {
    if (type !== "seek") flushSeek(s); // keeps a session's events in the order they happened
    const d = durationOf(s);
    if (needsDuration && !d) return;
    const e = {
      event_id: uuid(), type: type, ts: Date.now(), video_id: s.videoId, session_id: s.sessionId, viewer_id: s.viewerId,
    };
    const pos = s.video.currentTime;
    if (isFinite(pos) && pos >= 0) e.position_s = r3(d ? Math.min(pos, d) : pos);
    if (d) e.duration_s = r3(d);
    Object.assign(e, s.ctx, fields);
    enqueue(e, urgent ? URGENT_DELAY : BATCH_DELAY);
  }

  // Moves the ranges played since the last event that carried `played` into `fields`.
  function withPlayed(s, fields) {
    const d = durationOf(s);
    if (!d) return fields;
    fields.played = s.pending
      .map((r) => [r3(Math.max(0, r[0])), r3(Math.min(d, r[1]))])
      .filter((r) => r[0] < r[1]);
    s.pending = [];
    return fields;
  }

  const emitProgress = (s) => emit(s, "progress", withPlayed(s, {}), true);

  function tryStart(s) {
    if (s.started || !s.firstPlay || !durationOf(s)) return;
    s.started = true;
    // Stamped with the first play's time and position, even when the duration came later.
    emit(s, "session_start", { ts: s.firstPlay.ts, position_s: r3(Math.min(s.firstPlay.pos, s.duration)) }, true);
  }

  function syncRate(s) {
    const rate = s.video.playbackRate;
    if (!s.started || rate === s.sentRate || !(rate >= 0.001 && rate <= 16)) return;
    s.sentRate = rate;
    emit(s, "rate_change", { rate: r3(rate) });
  }

  // The heart of range recording: runs on every timeupdate and before any event that
  // depends on the playhead. A step counts as played only while playing, outside a seek,
  // and if it is no longer than the rate allows for the wall time since the previous
  // sample (timeupdate fires about every 250 ms, so at 16x a normal step is ~4 s).
  function sample(s) {
    const v = s.video;
    const pos = v.currentTime;
    const now = Date.now();
    const rate = v.playbackRate || 1;
    if (!isFinite(pos)) return;
    // timeupdate can beat `play`; a closed session (pagehide) restarts only on a real play.
    if (!s.playing && !s.closed && !v.paused && !v.seeking) return onPlay(s);
    if (s.playing && !s.seeking && !v.seeking) {
      if (s.lastPos != null) {
        const delta = pos - s.lastPos;
        const limit = Math.max(2, (1.5 * Math.max(rate, s.rate) * (now - s.lastWall)) / 1000);
        if (delta > 0 && delta <= limit) recordPlayed(s, s.lastPos, pos);
        else if (Math.abs(delta) > limit) noteSeek(s, s.lastPos, pos); // a jump without `seeking`
      }
      s.lastPos = pos;
      s.lastWall = now;
    }
    s.rate = rate;
    if (!s.seeking) s.known = pos; // during a seek it stays the target, for resumePoint()
  }

  function recordPlayed(s, a, b) {
    const d = durationOf(s);
    if (!d) return; // without a duration the ranges could never be sent
    tryStart(s);
    addRange(s.pending, a, b);
    addRange(s.coverage, Math.max(0, a), Math.min(d, b));
    // Milestones and completion follow the seconds covered, not the playhead: skipping
    // to the end earns nothing, rewatching a part earns nothing twice.
    const covered = rangesLength(s.coverage) + 1e-6;
    MILESTONES.forEach((m) => {
      if (!s.milestones[m] && covered >= (d * m) / 100) {
        s.milestones[m] = true;
        emit(s, "milestone", { milestone: m });
      }
    });
    if (!s.completed && covered >= d * config.threshold) {
      s.completed = true;
      emit(s, "complete", withPlayed(s, {}), true, true);
    }
    if (s.pending.length >= MAX_RANGES) emitProgress(s); // many short seeks: send early
  }

  function noteSeek(s, from, to) {
    if (!s.seek) s.seek = { from: from, ts: Date.now() };
    s.seek.to = to;
    clearTimeout(s.seekTimer);
    s.seekTimer = setTimeout(guard(() => flushSeek(s)), SEEK_SETTLE);
  }

  function flushSeek(s) {
    const k = s.seek;
    if (!k) return;
    s.seek = null;
    clearTimeout(s.seekTimer);
    const d = durationOf(s);
    // From the end back to the start is a loop or a replay after `ended`, not a seek.
    const wrap = d && k.to < 0.5 && k.from >= d - Math.max(1, 0.5 * (s.video.playbackRate || 1));
    if (!s.started || wrap || Math.abs(k.to - k.from) < 0.001) return;
    const to = Math.max(0, d ? Math.min(k.to, d) : k.to);
    const fields = { ts: k.ts, from_s: r3(Math.max(0, k.from)), to_s: r3(to), position_s: r3(to) };
    emit(s, "seek", withPlayed(s, fields), false, true);
  }

  // ---- media element handlers ---------------------------------------------------------
  // `play` and `seeked` can arrive a few ms after the playhead started moving: count from
  // the position last seen while stopped when the playhead is just ahead of it.
  function resumePoint(s) {
    const pos = s.video.currentTime || 0;
    return pos >= s.known && pos - s.known <= 2 ? s.known : pos;
  }

  function onPlay(s) {
    if (s.playing) return;
    if (s.closed) resetSession(s); // its session_end was sent (bfcache restore): a new view
    const v = s.video;
    const from = resumePoint(s);
    Object.assign(s, { playing: true, lastPos: s.seeking || v.seeking ? null : from, lastWall: Date.now() });
    if (!s.firstPlay) s.firstPlay = { ts: Date.now(), pos: from };
    tryStart(s); // session_start now, or as soon as the duration is known
    emit(s, "play", {});
    syncRate(s); // a rate chosen before the first play is reported right after it
    clearInterval(s.progressTimer);
    s.progressTimer = setInterval(guard(() => {
      if (!s.playing) return;
      sample(s);
      emitProgress(s);
    }), config.progressInterval * 1000);
  }

  function onPause(s) {
    if (!s.playing) return;
    sample(s);
    Object.assign(s, { playing: false, lastPos: null });
    clearInterval(s.progressTimer);
    emit(s, "pause", withPlayed(s, {}), false, true);
  }

  // Browsers fire `pause` right before `ended`, so this normally only flushes. The session
  // stays open (a replay continues the same view); session_end comes on pagehide/stop().
  function onEnded(s) {
    if (s.playing) onPause(s);
    schedule(URGENT_DELAY);
  }

  function onSeeking(s) {
    // currentTime already holds the target here: the seek starts at the last sample.
    Object.assign(s, { seeking: true, lastPos: null });
    noteSeek(s, s.known, s.video.currentTime);
    s.known = s.video.currentTime;
  }

  function onSeeked(s) {
    const from = resumePoint(s);
    noteSeek(s, s.known, from);
    Object.assign(s, { seeking: false, known: from });
    if (s.playing) Object.assign(s, { lastPos: from, lastWall: Date.now() });
  }

  function onRateChange(s) {
    sample(s); // closes the step played at the old rate
    syncRate(s);
  }

  function onDuration(s) {
    if (!durationOf(s)) return;
    tryStart(s);
    syncRate(s);
  }

  // A new source was loaded into the element: the browser stops without a pause event.
  function onEmptied(s) {
    Object.assign(s, { playing: false, lastPos: null, seek: null, known: 0 });
    clearInterval(s.progressTimer);
  }

  function endSession(s) {
    if (s.playing) sample(s);
    flushSeek(s);
    if (s.started && !s.closed) emit(s, "session_end", withPlayed(s, {}), true, true);
    Object.assign(s, { closed: s.started, playing: false, lastPos: null });
    clearInterval(s.progressTimer);
  }

  function stopSession(s) {
    if (sessions.get(s.video) !== s) return;
    endSession(s);
    s.listeners.forEach((l) => s.video.removeEventListener(l[0], l[1]));
    sessions.delete(s.video);
    log("stopped", s.videoId, s.sessionId);
  }

  // ---- the outbox ---------------------------------------------------------------------
  // items: {e: event, n: JSON size in bytes, b: sent by beacon (unconfirmed), f: in a fetch}
  const Q = {
    items: [], done: new Set(), sending: null, timer: null, due: 0, failures: 0, retryAt: 0,
    batchMax: MAX_BATCH_EVENTS,
    stats: { delivered: 0, rejected: 0, dropped: 0, requests: 0, beacons: 0, lastStatus: null },
  };
  const toItem = (e) => ({ e: e, n: byteLength(JSON.stringify(e)), b: false, f: false });
  const waiting = () => Q.items.filter((it) => !it.b && !it.f);

  function enqueue(e, delay) {
    Q.items.push(toItem(e));
    log("event", e.type, e);
    if (config.debug && debugEvents.push(e) > 500) debugEvents.shift();
    // Bounded in memory too (no storage, long outage): the oldest go first.
    while (Q.items.length > MAX_STORED_EVENTS) {
      const i = Q.items.findIndex((it) => !it.f);
      if (i < 0) break;
      markDone(Q.items.splice(i, 1));
      Q.stats.dropped++;
    }
    persist();
    schedule(waiting().length >= EAGER_COUNT ? 0 : delay);
  }

  // Remembers finished ids, so a stale copy of them written by another tab is not kept.
  function markDone(items) {
    items.forEach((it) => Q.done.add(it.e.event_id));
    if (Q.done.size > 5000) Q.done = new Set(Array.from(Q.done).slice(-2500));
  }

  // Mirrors the outbox to localStorage. Tabs share the key, so stored entries this tab
  // neither holds nor finished belong to another tab and are kept. Oldest go beyond bounds.
  function persist() {
    if (!store.persistent) return;
    let stored = [];
    try { stored = JSON.parse(store.get(QUEUE_KEY) || "[]"); } catch (_) { /* corrupt: overwrite */ }
    const mine = new Set(Q.items.map((it) => it.e.event_id));
    const entries = (Array.isArray(stored) ? stored : [])
      .filter((x) => x && x.e && !mine.has(x.e.event_id) && !Q.done.has(x.e.event_id))
      .concat(Q.items.map((it) => ({ e: it.e, b: it.b ? 1 : 0 })))
      .sort((a, b) => a.e.ts - b.e.ts);
    const texts = entries.map((x) => JSON.stringify(x));
    let start = Math.max(0, entries.length - MAX_STORED_EVENTS);
    let chars = texts.slice(start).reduce((n, t) => n + t.length + 1, 1);
    while (start < entries.length && chars > MAX_STORED_CHARS) chars -= texts[start++].length + 1;
    if (start > 0) {
      const gone = new Set(entries.slice(0, start).map((x) => x.e.event_id));
      const before = Q.items.length;
      Q.items = Q.items.filter((it) => it.f || !gone.has(it.e.event_id));
      Q.stats.dropped += before - Q.items.length;
    }
    if (start >= entries.length) store.remove(QUEUE_KEY);
    else if (!store.set(QUEUE_KEY, "[" + texts.slice(start).join(",") + "]")) log("localStorage full, memory only");
  }

  // What earlier page loads left (failed, or only beaconed) is sent again now.
  function loadStored() {
    let stored;
    try { stored = JSON.parse(store.get(QUEUE_KEY) || "[]"); } catch (_) { stored = []; }
    const oldest = Date.now() - MAX_AGE;
    (Array.isArray(stored) ? stored : []).forEach((x) => {
      if (x && x.e && typeof x.e.event_id === "string" && x.e.ts > oldest) Q.items.push(toItem(x.e));
    });
    persist(); // forgets the expired ones
    if (Q.items.length) {
      log("resending", Q.items.length, "stored events");
      schedule(500);
    }
  }

  function schedule(delay) {
    const due = Math.max(Date.now() + delay, Q.retryAt);
    if (Q.timer && Q.due <= due) return;
    clearTimeout(Q.timer);
    Q.due = due;
    Q.timer = setTimeout(guard(() => {
      Q.timer = null;
      drain(false);
    }), due - Date.now());
  }

  const body = (items) => "[" + items.map((it) => JSON.stringify(it.e)).join(",") + "]";

  // Takes the next request's worth of waiting events (within the server's limits).
  function nextBatch() {
    const items = [];
    let bytes = 2;
    for (const it of waiting()) {
      if (items.length >= Q.batchMax || (items.length && bytes + it.n + 1 > MAX_BATCH_BYTES)) break;
      items.push(it);
      bytes += it.n + 1;
    }
    items.forEach((it) => (it.f = true));
    return { items: items, bytes: bytes };
  }

  // Sends one request at a time until the outbox is empty or a request must be retried
  // later. `force` (flush(), stop()) ignores a running backoff. Never rejects.
  function drain(force) {
    if (Q.sending) return Q.sending;
    if (!force && Date.now() < Q.retryAt) return Promise.resolve(schedule(0));
    Q.sending = (async () => {
      for (let batch = nextBatch(); batch.items.length; batch = nextBatch()) {
        const retryAfter = await send(batch.items, batch.bytes);
        if (retryAfter == null) {
          Object.assign(Q, { failures: 0, retryAt: 0, batchMax: Math.min(MAX_BATCH_EVENTS, Q.batchMax * 2) });
          continue;
        }
        // Exponential backoff with jitter, 1 s to 60 s, or longer if the server asks.
        const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * Math.pow(2, Q.failures++));
        const wait = Math.max(base / 2 + (Math.random() * base) / 2, Math.min(retryAfter, 600000));
        Q.retryAt = Date.now() + wait;
        log("delivery failed, retrying in", Math.round(wait), "ms");
        schedule(0);
        break;
      }
    })()
      .catch((err) => log("internal error", err))
      .then(() => {
        Q.sending = null;
      });
    return Q.sending;
  }

  // One POST. Returns null once the batch is settled (delivered, or refused for good), or
  // the server's Retry-After in ms (0 if none) when it must be sent again later.
  async function send(items, bytes) {
    const ctrl = typeof AbortController === "function" ? new AbortController() : null;
    const timer = setTimeout(() => ctrl && ctrl.abort(), FETCH_TIMEOUT);
    Q.stats.requests++;
    let res;
    try {
      // text/plain keeps this a "simple" CORS request: no preflight, so the script can
      // be served from any origin and still post to the ingest.
      res = await window.fetch(config.endpoint, {
        method: "POST", mode: "cors", credentials: "omit", keepalive: bytes <= MAX_KEEPALIVE_BYTES,
        headers: { "Content-Type": "text/plain;charset=UTF-8" }, body: body(items),
        signal: ctrl ? ctrl.signal : undefined,
      });
    } catch (err) {
      res = null; // offline, DNS, CORS refused, timeout: all worth another try
    }
    clearTimeout(timer);
    const status = res ? res.status : 0;
    Q.stats.lastStatus = status || "network error";
    const retry = !res || status === 408 || status === 429 || status >= 500;
    if (retry || (status === 413 && items.length > 1)) {
      items.forEach((it) => (it.f = false));
      if (retry) {
        const header = res && res.headers.get("Retry-After"); // readable only if the server exposes it
        const seconds = Number(header);
        return header && isFinite(seconds) ? seconds * 1000 : Math.max(0, Date.parse(header) - Date.now()) || 0;
      }
      Q.batchMax = Math.max(1, Math.floor(items.length / 4)); // the server's limit is lower than ours
      return null;
    }
    // 2xx, or a 4xx that no retry can fix (bad events, 413 for a single event): settled.
    let answer = null;
    try { answer = JSON.parse(await res.text()); } catch (_) { /* no JSON body */ }
    const rejected = new Set(res.ok ? ((answer && answer.rejected) || []).map((r) => items[r.index]) : items);
    if (rejected.size) log("server rejected events", status, answer);
    Q.items = Q.items.filter((it) => items.indexOf(it) < 0);
    markDone(items);
    Q.stats.rejected += items.filter((it) => rejected.has(it)).length;
    Q.stats.delivered += items.filter((it) => !rejected.has(it)).length;
    persist();
    return null;
  }

  // Last chance while the page goes away: sendBeacon survives unload where fetch may not.
  // Chunks stay below the browser's 64 KiB in-flight cap; whatever the browser refuses
  // stays queued unmarked, for the next page load.
  function beaconAll() {
    if (typeof navigator.sendBeacon !== "function") return drain(true); // keepalive fetch then
    let chunk = [];
    let bytes = 2;
    const sendChunk = () => {
      let ok = false;
      try {
        ok = navigator.sendBeacon(config.endpoint, new Blob([body(chunk)], { type: "text/plain;charset=UTF-8" }));
      } catch (_) { /* refused */ }
      if (ok) chunk.forEach((it) => (it.b = true));
      if (ok) Q.stats.beacons++;
      chunk = [];
      bytes = 2;
      return ok;
    };
    for (const it of waiting()) {
      const full = bytes + it.n + 1 > MAX_KEEPALIVE_BYTES || chunk.length >= MAX_BATCH_EVENTS;
      if (chunk.length && full && !sendChunk()) break;
      chunk.push(it);
      bytes += it.n + 1;
    }
    if (chunk.length) sendChunk();
    persist();
  }

  // ---- page lifecycle and discovery -----------------------------------------------------
  function onHidden() {
    // On mobile this may be the last event the page ever gets: put what was played so far
    // into an event now instead of risking it with the page.
    sessions.forEach((s) => {
      if (s.playing) sample(s);
      flushSeek(s);
      if (s.started && !s.closed && s.pending.length) emitProgress(s);
    });
    beaconAll();
  }

  function onPageHide() {
    sessions.forEach(endSession);
    beaconAll();
  }

  function scan(node) {
    if (!node || node.nodeType !== 1) return;
    if (node.tagName === "VIDEO" && node.hasAttribute(VIDEO_ATTR)) track(node, null, true);
    node.querySelectorAll("video[" + VIDEO_ATTR + "]").forEach((v) => track(v, null, true));
  }

  function onMutations(records) {
    let removed = false;
    records.forEach((r) => {
      if (r.type === "attributes") {
        // The page switched this element to another video: end that view, start a new one.
        const s = sessions.get(r.target);
        if (s && s.auto && r.target.getAttribute(VIDEO_ATTR) !== s.videoId) stopSession(s);
        scan(r.target);
      } else {
        r.addedNodes.forEach(scan);
        removed = removed || r.removedNodes.length > 0;
      }
    });
    // An element moved within one task is connected again by now: only real removals end.
    if (!removed) return;
    sessions.forEach((s) => {
      if (!s.video.isConnected) stopSession(s);
    });
    schedule(URGENT_DELAY);
  }

  function snapshot() {
    const state = {
      version: VERSION, config: config, persistent: store.persistent, stats: Q.stats,
      queued: Q.items.filter((it) => !it.b).length, // not yet confirmed by a fetch (beaconed excluded)
      inflight: Q.items.filter((it) => it.f).length,
      beaconed: Q.items.filter((it) => it.b).length,
      failures: Q.failures, retryInMs: Math.max(0, Q.retryAt - Date.now()),
      sessions: debugSessions.map((s) => ({
        videoId: s.videoId, viewerId: s.viewerId, sessionId: s.sessionId, tracked: sessions.get(s.video) === s,
        started: s.started, closed: s.closed, playing: s.playing, duration: s.duration, position: s.known,
        coverage: s.coverage, covered: r3(rangesLength(s.coverage)),
        milestones: Object.keys(s.milestones).map(Number), completed: s.completed,
      })),
      events: debugEvents,
    };
    return JSON.parse(JSON.stringify(state)); // a copy: tests read it, nothing writes through it
  }

  // ---- public API and start -------------------------------------------------------------
  const api = {
    version: VERSION,
    // track(videoElement, {videoId, viewerId, viewerSig, courseId, lessonId, isPreview}) -> stop()
    track: (video, options) => {
      try { return track(video, options, false); } catch (err) { log("internal error", err); return noop; }
    },
    // Sends everything queued now; the promise resolves (never rejects) when that is done.
    flush: () => {
      try {
        sessions.forEach(flushSeek);
        return drain(true);
      } catch (err) {
        log("internal error", err);
        return Promise.resolve();
      }
    },
  };
  if (config.debug) Object.defineProperty(api, "_debug", { get: snapshot });
  window.vidpulse = api;

  guard(() => {
    loadStored();
    window.addEventListener("pagehide", guard(onPageHide));
    document.addEventListener("visibilitychange", guard(() => {
      if (document.visibilityState === "hidden") onHidden();
    }));
    window.addEventListener("online", guard(() => {
      Q.retryAt = 0;
      schedule(0);
    }));
    if (typeof MutationObserver === "function") {
      new MutationObserver(guard(onMutations)).observe(document.documentElement, {
        childList: true, subtree: true, attributes: true, attributeFilter: [VIDEO_ATTR],
      });
    }
    scan(document.documentElement);
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", guard(() => scan(document.documentElement)));
    }
    log("ready", config);
    // Code that ran before this deferred script (a React effect, say) can wait for this.
    window.dispatchEvent(new Event("vidpulse:ready"));
  })();
})(window, document);
