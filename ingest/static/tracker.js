/*! vidpulse tracker: records which parts of each <video> a viewer actually played
 * and sends them to the vidpulse ingest (POST /v1/events). Plain ES2017, no deps.
 * Usage, options and what is sent when: docs/tracker.md. Wire contract: SPEC.md §4.
 *
 * Decisions worth knowing before changing this file:
 * - A session is one view of one video on one page view. It starts (session_start)
 *   at the first play once the duration is known, and ends (session_end) on pagehide
 *   or stop(). `ended` only closes the open played range (the browser already fired
 *   `pause`) and flushes: the session stays open so a replay adds to the same view.
 *   After session_end (e.g. page restored from the back/forward cache), the next
 *   play starts a new session.
 * - Played ranges come from timeupdate: a forward step no larger than what the
 *   playback rate allows since the previous sample is "played"; anything else, and
 *   everything between `seeking` and `seeked`, is a seek and never counts.
 * - Seeks are debounced (a scrub is one seek event). Seeks and rate changes before
 *   the first play only set up the session (e.g. a resume position) and are not sent.
 * - Events wait in a queue mirrored to localStorage and go out as one JSON array at
 *   most BATCH_DELAY after the first queued one; pause/seek/complete/session_end
 *   shorten that to URGENT_DELAY. Nothing leaves the queue until the server answers
 *   2xx (delivered or rejected per event) or another 4xx (rejected for good).
 * - What sendBeacon sent is only marked "beaconed": it stays stored and is re-sent
 *   on the next page load, because a beacon cannot report whether it arrived. The
 *   server deduplicates by event_id.
 */
(function (window, document) {
  "use strict";
  if (window.vidpulse && window.vidpulse.version) return; // included twice: the first copy wins

  var VERSION = "1.0.0";
  var ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;
  var VIDEO_ATTR = "data-vidpulse-video-id";
  var MILESTONES = [25, 50, 75, 90];
  var QUEUE_KEY = "vidpulse:queue";
  var VIEWER_KEY = "vidpulse:viewer";
  var MAX_STORED_EVENTS = 1000;
  var MAX_STORED_CHARS = 200 * 1024;
  var MAX_BATCH_EVENTS = 500; // server limit per request
  var MAX_BATCH_BYTES = 240 * 1024; // server limit is 256 KiB; keep headroom
  var MAX_KEEPALIVE_BYTES = 60 * 1024; // browsers cap in-flight beacon/keepalive bodies at 64 KiB
  var MAX_RANGES = 100; // server limit of `played` ranges per event
  var BATCH_DELAY = 1500;
  var URGENT_DELAY = 200;
  var SEEK_SETTLE = 400; // a scrub fires many seeking events; report it as one seek
  var EAGER_COUNT = 50; // send at once when this many events wait
  var BACKOFF_MIN = 1000;
  var BACKOFF_MAX = 60000;
  var FETCH_TIMEOUT = 20000;
  var MAX_AGE = 7 * 86400000 - 3600000; // the server rejects ts older than 7 days

  var noop = function () {};
  var encoder = typeof TextEncoder === "function" ? new TextEncoder() : null;
  var byteLength = function (text) {
    return encoder ? encoder.encode(text).length : text.length * 3;
  };
  var r3 = function (x) {
    return Math.round(x * 1000) / 1000;
  };
  var positive = function (x) {
    return typeof x === "number" && isFinite(x) && x > 0;
  };

  // ---- configuration, read once from our own <script> tag -------------------------
  // currentScript is only set while this file first runs, so capture it now.
  var script = document.currentScript;
  if (!script) {
    var candidates = document.querySelectorAll('script[src*="tracker.js"]');
    script = candidates[candidates.length - 1] || null;
  }
  var config = readConfig(script);

  function readConfig(el) {
    var attr = function (name) {
      return el ? el.getAttribute(name) : null;
    };
    var number = function (name, fallback, ok) {
      var n = parseFloat(attr(name));
      return isFinite(n) && ok(n) ? n : fallback;
    };
    var base = el && el.src ? el.src : window.location.href;
    var endpoint = attr("data-endpoint");
    try {
      // Relative data-endpoint resolves against the page; the default against the script.
      endpoint = endpoint ? new URL(endpoint, document.baseURI).href : new URL("/v1/events", base).href;
    } catch (_) {
      endpoint = endpoint || "/v1/events";
    }
    var debug = attr("data-debug");
    return {
      endpoint: endpoint,
      threshold: number("data-completion-threshold", 0.9, function (n) { return n > 0 && n <= 1; }),
      progressInterval: number("data-progress-interval", 15, function (n) { return n >= 1; }),
      debug: debug !== null && debug !== "false" && debug !== "0",
    };
  }

  function log() {
    if (config.debug && window.console) {
      console.debug.apply(console, ["[vidpulse]"].concat(Array.prototype.slice.call(arguments)));
    }
  }
  function warn(message) {
    try { console.warn("[vidpulse] " + message); } catch (_) { /* no console */ }
  }
  // Every entry point from the browser or the host page goes through guard(): a bug
  // here must never surface as an exception in someone else's page.
  function guard(fn) {
    return function () {
      try {
        return fn.apply(this, arguments);
      } catch (err) {
        log("internal error", err);
      }
    };
  }

  // ---- storage: localStorage when it works, else memory (private mode, sandboxes) --
  var store = (function () {
    var ls = null;
    var memory = {};
    try {
      ls = window.localStorage;
      ls.setItem("vidpulse:probe", "1");
      ls.removeItem("vidpulse:probe");
    } catch (_) {
      ls = null;
    }
    return {
      persistent: !!ls,
      get: function (key) {
        try { return ls ? ls.getItem(key) : key in memory ? memory[key] : null; } catch (_) { return null; }
      },
      set: function (key, value) {
        try { if (ls) ls.setItem(key, value); else memory[key] = value; return true; } catch (_) { return false; }
      },
      remove: function (key) {
        try { if (ls) ls.removeItem(key); else delete memory[key]; } catch (_) { /* ignore */ }
      },
    };
  })();

  // ---- ids ----------------------------------------------------------------------
  var cryptoObj = window.crypto;
  function uuid() {
    if (cryptoObj && typeof cryptoObj.randomUUID === "function") {
      try { return cryptoObj.randomUUID(); } catch (_) { /* not a secure context */ }
    }
    var b = new Array(16);
    if (cryptoObj && typeof cryptoObj.getRandomValues === "function") {
      b = cryptoObj.getRandomValues(new Uint8Array(16));
    } else {
      for (var i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    }
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    var hex = "";
    for (var j = 0; j < 16; j++) {
      hex += (b[j] + 0x100).toString(16).slice(1);
      if (j === 3 || j === 5 || j === 7 || j === 9) hex += "-";
    }
    return hex;
  }

  var anonymousId = null;
  function anonymousViewer() {
    if (!anonymousId) {
      var stored = store.get(VIEWER_KEY);
      anonymousId = stored && ID_RE.test(stored) ? stored : "anon-" + uuid();
      if (anonymousId !== stored) store.set(VIEWER_KEY, anonymousId);
    }
    return anonymousId;
  }

  // ---- media ranges: sorted, disjoint [start, end] pairs ----------------------------
  function addRange(list, a, b) {
    var i = 0;
    while (i < list.length && list[i][1] < a) i++;
    var j = i;
    while (j < list.length && list[j][0] <= b) {
      a = Math.min(a, list[j][0]);
      b = Math.max(b, list[j][1]);
      j++;
    }
    list.splice(i, j - i, [a, b]);
  }
  function rangesLength(list) {
    return list.reduce(function (n, r) { return n + r[1] - r[0]; }, 0);
  }

  // ---- sessions -------------------------------------------------------------------
  var sessions = new Map(); // <video> -> session; entries are removed by stop()
  var everTracked = []; // debug mode only: sessions for window.vidpulse._debug
  var recentEvents = []; // debug mode only: the last events built

  function pick(a, b) {
    var v = a != null && a !== "" ? a : b;
    return v != null && v !== "" ? String(v) : null;
  }

  function track(video, options, auto) {
    if (!video || video.tagName !== "VIDEO") {
      warn("track() needs a <video> element");
      return noop;
    }
    var existing = sessions.get(video);
    if (existing) return existing.stop; // never track one element twice
    var o = options || {};
    var data = function (name) { return video.getAttribute("data-vidpulse-" + name); };
    var videoId = pick(o.videoId, data("video-id"));
    var viewerId = pick(o.viewerId, data("viewer-id")) || anonymousViewer();
    if (!videoId || !ID_RE.test(videoId) || !ID_RE.test(viewerId)) {
      warn("not tracking: video and viewer ids must be 1-128 chars of [A-Za-z0-9._:-] (got " +
        JSON.stringify(videoId) + ", " + JSON.stringify(viewerId) + ")");
      return noop;
    }
    var ctx = {};
    [["course_id", pick(o.courseId, data("course-id"))], ["lesson_id", pick(o.lessonId, data("lesson-id"))]]
      .forEach(function (kv) {
        if (kv[1] && kv[1].length <= 128) ctx[kv[0]] = kv[1];
        else if (kv[1]) warn(kv[0] + " longer than 128 chars, not sent");
      });
    if (o.isPreview === true || (o.isPreview == null && data("is-preview") === "true")) ctx.is_preview = true;

    var s = { video: video, videoId: videoId, viewerId: viewerId, ctx: ctx, auto: !!auto, listeners: [] };
    resetSession(s);
    var handlers = {
      play: onPlay, playing: sample, pause: onPause, ended: onEnded, timeupdate: sample,
      seeking: onSeeking, seeked: onSeeked, ratechange: onRateChange,
      loadedmetadata: onDuration, durationchange: onDuration, emptied: onEmptied,
    };
    Object.keys(handlers).forEach(function (type) {
      var fn = guard(function () { handlers[type](s); });
      video.addEventListener(type, fn);
      s.listeners.push([type, fn]);
    });
    s.stop = guard(function () { stopSession(s); drain(true); });
    sessions.set(video, s);
    if (config.debug) everTracked.push(s);
    log("tracking", videoId, s.sessionId);
    if (!video.paused) onPlay(s); // autoplay started before we were attached
    return s.stop;
  }

  function resetSession(s) {
    clearInterval(s.progressTimer);
    clearTimeout(s.seekTimer);
    var v = s.video;
    Object.assign(s, {
      sessionId: uuid(), started: false, closed: false, firstPlay: null, duration: null,
      playing: false, seeking: false, seek: null, lastPos: null, lastWall: 0,
      known: v.currentTime || 0, rate: v.playbackRate || 1, sentRate: 1,
      pending: [], coverage: [], milestones: {}, completed: false, progressTimer: null, seekTimer: null,
    });
  }

  function durationOf(s) {
    if (positive(s.video.duration)) s.duration = s.video.duration;
    return s.duration; // null while unknown or infinite (live streams)
  }

  // Builds one wire event and queues it. Events that need duration_s are skipped
  // while it is unknown. `fields` may override ts and position_s.
  function emit(s, type, fields, needsDuration, urgent) {
    if (type !== "seek") flushSeek(s); // keep a session's events in the order they happened
    var d = durationOf(s);
    if (needsDuration && !d) return;
    var e = {
      event_id: uuid(), type: type, ts: Date.now(),
      video_id: s.videoId, session_id: s.sessionId, viewer_id: s.viewerId,
    };
    var pos = s.video.currentTime;
    if (isFinite(pos) && pos >= 0) e.position_s = r3(d ? Math.min(pos, d) : pos);
    if (d && r3(d) > 0) e.duration_s = r3(d);
    Object.assign(e, s.ctx, fields);
    if (e.played && !e.duration_s) delete e.played;
    enqueue(e, urgent ? URGENT_DELAY : BATCH_DELAY);
  }

  // Takes the ranges played since the last event that carried `played`.
  function withPlayed(s, fields) {
    var d = durationOf(s);
    if (!d) return fields;
    fields.played = s.pending
      .map(function (r) { return [r3(Math.max(0, r[0])), r3(Math.min(d, r[1]))]; })
      .filter(function (r) { return r[0] < r[1]; });
    s.pending = [];
    return fields;
  }

  function emitProgress(s) {
    emit(s, "progress", withPlayed(s, {}), true);
  }

  function tryStart(s) {
    if (s.started || !s.firstPlay || !durationOf(s)) return;
    s.started = true;
    // Stamped with the first play's time and position even when the duration arrived later.
    emit(s, "session_start", { ts: s.firstPlay.ts, position_s: r3(Math.min(s.firstPlay.pos, s.duration)) }, true);
  }

  function syncRate(s) {
    var rate = s.video.playbackRate;
    if (!s.started || rate === s.sentRate || !(rate > 0 && rate <= 16) || !(r3(rate) > 0)) return;
    s.sentRate = rate;
    emit(s, "rate_change", { rate: r3(rate) });
  }

  // The heart of range recording; runs on every timeupdate and before any event that
  // depends on the playhead. A step counts as played only while playing, outside a
  // seek, and if it is no larger than the rate allows for the wall time since the
  // previous sample (timeupdate fires about every 250 ms, so at 16x a step is ~4 s).
  function sample(s) {
    var v = s.video;
    var pos = v.currentTime;
    var now = Date.now();
    var rate = v.playbackRate || 1;
    if (!isFinite(pos)) return;
    if (s.playing && !s.seeking && !v.seeking) {
      if (s.lastPos != null) {
        var delta = pos - s.lastPos;
        var limit = Math.max(2, (1.5 * Math.max(rate, s.rate) * (now - s.lastWall)) / 1000);
        if (delta > 0 && delta <= limit) recordPlayed(s, s.lastPos, pos);
        else if (Math.abs(delta) > limit) noteSeek(s, s.lastPos, pos); // jumped without a seeking event
      }
      s.lastPos = pos;
      s.lastWall = now;
    }
    s.rate = rate;
    s.known = pos;
  }

  function recordPlayed(s, a, b) {
    var d = durationOf(s);
    if (!d) return; // ranges without a duration could never be sent
    tryStart(s);
    addRange(s.pending, a, b);
    addRange(s.coverage, Math.max(0, a), Math.min(d, b));
    // Milestones and completion follow the seconds covered, not the playhead, so
    // skipping ahead to the end earns nothing.
    var covered = rangesLength(s.coverage) + 1e-6;
    MILESTONES.forEach(function (m) {
      if (!s.milestones[m] && covered >= (d * m) / 100) {
        s.milestones[m] = true;
        emit(s, "milestone", { milestone: m });
      }
    });
    if (!s.completed && covered >= d * config.threshold) {
      s.completed = true;
      emit(s, "complete", withPlayed(s, {}), true, true);
    }
    if (s.pending.length >= MAX_RANGES) emitProgress(s); // many small seeks: flush early
  }

  function noteSeek(s, from, to) {
    if (!s.seek) s.seek = { from: from, ts: Date.now() };
    s.seek.to = to;
    clearTimeout(s.seekTimer);
    s.seekTimer = setTimeout(guard(function () { flushSeek(s); }), SEEK_SETTLE);
  }

  function flushSeek(s) {
    var k = s.seek;
    if (!k) return;
    s.seek = null;
    clearTimeout(s.seekTimer);
    var d = durationOf(s);
    // A wrap from the end to the start is a loop or a replay after `ended`, not a seek.
    var wrap = d && k.to < 0.5 && k.from >= d - Math.max(1, 0.5 * (s.video.playbackRate || 1));
    if (!s.started || wrap || Math.abs(k.to - k.from) < 0.001) return;
    emit(s, "seek", withPlayed(s, { ts: k.ts, from_s: r3(Math.max(0, k.from)), to_s: r3(Math.max(0, k.to)),
      position_s: r3(Math.max(0, d ? Math.min(k.to, d) : k.to)) }), false, true);
  }

  // ---- media element handlers ---------------------------------------------------------
  function onPlay(s) {
    if (s.playing) return;
    if (s.closed) resetSession(s); // session_end was sent (bfcache restore): a new view
    var v = s.video;
    s.playing = true;
    s.lastPos = s.seeking || v.seeking ? null : v.currentTime;
    s.lastWall = Date.now();
    s.rate = v.playbackRate || 1;
    if (!s.firstPlay) s.firstPlay = { ts: Date.now(), pos: v.currentTime || 0 };
    tryStart(s); // sends session_start now, or when the duration becomes known
    emit(s, "play", {});
    syncRate(s); // a rate chosen before the first play is reported right after it
    clearInterval(s.progressTimer);
    s.progressTimer = setInterval(guard(function () {
      if (!s.playing) return;
      sample(s);
      emitProgress(s);
    }), config.progressInterval * 1000);
  }

  function onPause(s) {
    if (!s.playing) return;
    sample(s); // the timeupdate fired with the pause may already have been sampled; harmless
    s.playing = false;
    s.lastPos = null;
    clearInterval(s.progressTimer);
    emit(s, "pause", withPlayed(s, {}), false, true);
  }

  // Browsers fire `pause` just before `ended`, so this normally only flushes. The
  // session stays open: pressing play again continues the same view (no new
  // session_start); session_end comes on pagehide or stop().
  function onEnded(s) {
    if (s.playing) onPause(s);
    schedule(URGENT_DELAY);
  }

  function onSeeking(s) {
    // currentTime already holds the target here, so the seek starts from the last sample.
    s.seeking = true;
    s.lastPos = null;
    noteSeek(s, s.known, s.video.currentTime);
    s.known = s.video.currentTime;
  }

  function onSeeked(s) {
    var pos = s.video.currentTime;
    s.seeking = false;
    noteSeek(s, s.known, pos);
    s.known = pos;
    if (s.playing) {
      s.lastPos = pos;
      s.lastWall = Date.now();
    }
  }

  function onRateChange(s) {
    sample(s); // close the step played at the old rate
    syncRate(s);
  }

  function onDuration(s) {
    if (!durationOf(s)) return;
    tryStart(s);
    syncRate(s);
  }

  // A new source was loaded into the element: the browser stops without a pause event.
  function onEmptied(s) {
    s.playing = false;
    s.lastPos = null;
    s.seek = null;
    clearInterval(s.progressTimer);
  }

  function endSession(s) {
    if (s.playing) sample(s);
    flushSeek(s);
    if (s.started && !s.closed) emit(s, "session_end", withPlayed(s, {}), true, true);
    s.closed = s.started;
    s.playing = false;
    s.lastPos = null;
    clearInterval(s.progressTimer);
  }

  function stopSession(s) {
    if (sessions.get(s.video) !== s) return;
    endSession(s);
    s.listeners.forEach(function (l) { s.video.removeEventListener(l[0], l[1]); });
    sessions.delete(s.video);
    log("stopped", s.videoId, s.sessionId);
  }

  // ---- the outbox -------------------------------------------------------------------
  // items: { e: event, n: JSON byte size, b: sent by beacon (unconfirmed), f: in a fetch }
  var Q = {
    items: [], forgotten: new Set(), sending: null, timer: null, due: 0,
    failures: 0, retryAt: 0, batchMax: MAX_BATCH_EVENTS,
    stats: { delivered: 0, rejected: 0, dropped: 0, requests: 0, beacons: 0, lastStatus: null },
  };

  function toItem(e) {
    return { e: e, n: byteLength(JSON.stringify(e)), b: false, f: false };
  }

  function enqueue(e, delay) {
    Q.items.push(toItem(e));
    if (config.debug) {
      recentEvents.push(e);
      if (recentEvents.length > 500) recentEvents.shift();
    }
    log("event", e.type, e);
    // Bounded even without storage: drop the oldest beyond the limit.
    while (Q.items.length > MAX_STORED_EVENTS) {
      var i = Q.items.findIndex(function (it) { return !it.f; });
      if (i < 0) break;
      forget(Q.items.splice(i, 1));
      Q.stats.dropped++;
    }
    persist();
    var waiting = Q.items.filter(function (it) { return !it.b && !it.f; }).length;
    schedule(waiting >= EAGER_COUNT ? 0 : delay);
  }

  // Remembers ids that are done so a stale copy written by another tab is not kept.
  function forget(items) {
    items.forEach(function (it) { Q.forgotten.add(it.e.event_id); });
    if (Q.forgotten.size > 5000) Q.forgotten = new Set(Array.from(Q.forgotten).slice(-2500));
  }

  // Mirrors the outbox to localStorage. Other tabs share the key, so entries this
  // tab does not know (and has not finished) are kept; the oldest go beyond the bounds.
  function persist() {
    if (!store.persistent) return;
    var others = [];
    try { others = JSON.parse(store.get(QUEUE_KEY) || "[]"); } catch (_) { /* corrupt: overwrite */ }
    var mine = new Set(Q.items.map(function (it) { return it.e.event_id; }));
    var entries = (Array.isArray(others) ? others : [])
      .filter(function (x) { return x && x.e && !mine.has(x.e.event_id) && !Q.forgotten.has(x.e.event_id); })
      .concat(Q.items.map(function (it) { return { e: it.e, b: it.b ? 1 : 0 }; }))
      .sort(function (a, b) { return a.e.ts - b.e.ts; });
    var texts = entries.map(function (x) { return JSON.stringify(x); });
    var start = Math.max(0, entries.length - MAX_STORED_EVENTS);
    var chars = texts.slice(start).reduce(function (n, t) { return n + t.length + 1; }, 1);
    while (start < entries.length && chars > MAX_STORED_CHARS) chars -= texts[start++].length + 1;
    if (start > 0) {
      var gone = new Set(entries.slice(0, start).map(function (x) { return x.e.event_id; }));
      var before = Q.items.length;
      Q.items = Q.items.filter(function (it) { return it.f || !gone.has(it.e.event_id); });
      Q.stats.dropped += before - Q.items.length;
    }
    if (start >= entries.length) store.remove(QUEUE_KEY);
    else if (!store.set(QUEUE_KEY, "[" + texts.slice(start).join(",") + "]")) log("localStorage full; queue kept in memory");
  }

  // Events left by earlier page loads (failed or only beaconed) are sent again now.
  function loadStored() {
    var stored;
    try { stored = JSON.parse(store.get(QUEUE_KEY) || "[]"); } catch (_) { stored = []; }
    if (!Array.isArray(stored)) return;
    var oldest = Date.now() - MAX_AGE;
    stored.forEach(function (x) {
      if (x && x.e && typeof x.e.event_id === "string" && x.e.ts > oldest) Q.items.push(toItem(x.e));
    });
    persist(); // drops the expired ones from storage
    if (Q.items.length) {
      log("resending", Q.items.length, "stored events");
      schedule(500);
    }
  }

  function schedule(delay) {
    var due = Math.max(Date.now() + delay, Q.retryAt);
    if (Q.timer && Q.due <= due) return;
    clearTimeout(Q.timer);
    Q.due = due;
    Q.timer = setTimeout(guard(function () { Q.timer = null; drain(false); }), due - Date.now());
  }

  function nextBatch() {
    var batch = [];
    var bytes = 2;
    for (var i = 0; i < Q.items.length && batch.length < Q.batchMax; i++) {
      var it = Q.items[i];
      if (it.b || it.f) continue;
      if (batch.length && bytes + it.n + 1 > MAX_BATCH_BYTES) break;
      batch.push(it);
      bytes += it.n + 1;
    }
    batch.forEach(function (it) { it.f = true; });
    return { items: batch, bytes: bytes };
  }

  function body(items) {
    return "[" + items.map(function (it) { return JSON.stringify(it.e); }).join(",") + "]";
  }

  function finish(items, outcome) {
    var set = new Set(items);
    Q.items = Q.items.filter(function (it) { return !set.has(it); });
    forget(items);
    Q.stats[outcome] += items.length;
    persist();
  }

  // Sends batches one request at a time until the outbox is empty or a request must
  // be retried later. `force` (flush(), stop()) ignores a running backoff.
  function drain(force) {
    if (Q.sending) return Q.sending;
    if (!force && Date.now() < Q.retryAt) {
      schedule(0);
      return Promise.resolve();
    }
    Q.sending = (async function () {
      for (;;) {
        var batch = nextBatch();
        if (!batch.items.length) break;
        var retryAfter = await send(batch.items, batch.bytes);
        if (retryAfter != null) {
          Q.failures++;
          var base = Math.min(BACKOFF_MAX, BACKOFF_MIN * Math.pow(2, Q.failures - 1));
          var wait = Math.max(base / 2 + (Math.random() * base) / 2, Math.min(retryAfter, 600000));
          Q.retryAt = Date.now() + wait;
          log("delivery failed; retrying in", Math.round(wait), "ms");
          schedule(0);
          break;
        }
        Q.failures = 0;
        Q.retryAt = 0;
      }
    })()
      .catch(function (err) { log("internal error", err); })
      .then(function () { Q.sending = null; });
    return Q.sending;
  }

  // One POST. Returns null when the batch is settled (delivered or rejected for good),
  // or the Retry-After in ms (0 when none) when it must be tried again.
  async function send(items, bytes) {
    var res;
    var ctrl = typeof AbortController === "function" ? new AbortController() : null;
    var timer = setTimeout(function () { if (ctrl) ctrl.abort(); }, FETCH_TIMEOUT);
    Q.stats.requests++;
    try {
      // text/plain keeps this a "simple" CORS request: no preflight, so a copy of
      // this script hosted elsewhere can post to the ingest.
      res = await window.fetch(config.endpoint, {
        method: "POST", mode: "cors", credentials: "omit", keepalive: bytes <= MAX_KEEPALIVE_BYTES,
        headers: { "Content-Type": "text/plain;charset=UTF-8" }, body: body(items),
        signal: ctrl ? ctrl.signal : undefined,
      });
    } catch (err) {
      items.forEach(function (it) { it.f = false; });
      Q.stats.lastStatus = "network error";
      return 0;
    } finally {
      clearTimeout(timer);
    }
    var status = res.status;
    Q.stats.lastStatus = status;
    if (res.ok || (status >= 400 && status < 500 && status !== 408 && status !== 429 && !(status === 413 && items.length > 1))) {
      var answer = null;
      try { answer = JSON.parse(await res.text()); } catch (_) { /* not JSON */ }
      var rejected = answer && Array.isArray(answer.rejected) ? answer.rejected : [];
      if (rejected.length || !res.ok) log("server rejected events", status, answer);
      var bad = new Set(res.ok ? rejected.map(function (r) { return items[r.index]; }) : items);
      finish(items.filter(function (it) { return !bad.has(it); }), "delivered");
      finish(items.filter(function (it) { return bad.has(it); }), "rejected");
      return null;
    }
    items.forEach(function (it) { it.f = false; });
    if (status === 413) {
      Q.batchMax = Math.max(1, Math.floor(items.length / 2)); // the server's limit is lower than ours
      return null;
    }
    var header = res.headers.get("Retry-After"); // readable cross-origin only if exposed by CORS
    var seconds = header == null ? NaN : Number(header);
    return isFinite(seconds) ? seconds * 1000 : header ? Math.max(0, Date.parse(header) - Date.now()) || 0 : 0;
  }

  // Last chance while the page goes away: sendBeacon survives unload where fetch may
  // not. Chunks stay below the 64 KiB in-flight cap; whatever the browser refuses
  // stays queued (unmarked) for the next page load.
  function beaconAll() {
    if (!navigator.sendBeacon) {
      drain(true); // fetch with keepalive is the next best thing
      return;
    }
    var chunk = [];
    var bytes = 2;
    var sendChunk = function () {
      var ok = false;
      try {
        ok = navigator.sendBeacon(config.endpoint, new Blob([body(chunk)], { type: "text/plain;charset=UTF-8" }));
      } catch (_) { /* refused */ }
      if (ok) {
        chunk.forEach(function (it) { it.b = true; });
        Q.stats.beacons++;
      }
      chunk = [];
      bytes = 2;
      return ok;
    };
    for (var i = 0; i < Q.items.length; i++) {
      var it = Q.items[i];
      if (it.b || it.f) continue;
      if (chunk.length && (bytes + it.n + 1 > MAX_KEEPALIVE_BYTES || chunk.length >= MAX_BATCH_EVENTS) && !sendChunk()) break;
      chunk.push(it);
      bytes += it.n + 1;
    }
    if (chunk.length) sendChunk();
    persist();
  }

  // ---- page lifecycle -----------------------------------------------------------------
  function onHidden() {
    // On mobile this may be the last event the page gets: put what was played so far
    // into an event now rather than risk losing it with the page.
    sessions.forEach(function (s) {
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
    if (node.querySelectorAll) {
      Array.prototype.forEach.call(node.querySelectorAll("video[" + VIDEO_ATTR + "]"), function (v) {
        track(v, null, true);
      });
    }
  }

  function onMutations(records) {
    var removed = false;
    records.forEach(function (r) {
      if (r.type === "attributes") {
        // The page switched this element to another video: end the old view, start anew.
        var s = sessions.get(r.target);
        if (s && s.auto && r.target.getAttribute(VIDEO_ATTR) !== s.videoId) stopSession(s);
        scan(r.target);
      } else {
        Array.prototype.forEach.call(r.addedNodes, scan);
        if (r.removedNodes.length) removed = true;
      }
    });
    // Moves within one task leave the element connected; only real removals end sessions.
    if (removed) {
      sessions.forEach(function (s) {
        if (!s.video.isConnected) {
          stopSession(s);
          schedule(URGENT_DELAY);
        }
      });
    }
  }

  function snapshot() {
    var out = {
      version: VERSION, endpoint: config.endpoint, threshold: config.threshold,
      progressInterval: config.progressInterval, persistent: store.persistent,
      queued: Q.items.filter(function (it) { return !it.b; }).length,
      inflight: Q.items.filter(function (it) { return it.f; }).length,
      beaconed: Q.items.filter(function (it) { return it.b; }).length,
      failures: Q.failures, retryInMs: Math.max(0, Q.retryAt - Date.now()), stats: Q.stats,
      sessions: everTracked.map(function (s) {
        return {
          videoId: s.videoId, viewerId: s.viewerId, sessionId: s.sessionId, tracked: sessions.get(s.video) === s,
          started: s.started, closed: s.closed, playing: s.playing, duration: s.duration, position: s.known,
          coverage: s.coverage, covered: r3(rangesLength(s.coverage)), pendingRanges: s.pending.length,
          milestones: Object.keys(s.milestones).map(Number), completed: s.completed,
        };
      }),
      events: recentEvents,
    };
    return JSON.parse(JSON.stringify(out)); // a copy: tests read it, nobody writes through it
  }

  // ---- start --------------------------------------------------------------------------
  var api = {
    version: VERSION,
    // track(videoElement, {videoId, viewerId, courseId, lessonId, isPreview}) -> stop()
    track: function (video, options) {
      try { return track(video, options, false) || noop; } catch (err) { log("internal error", err); return noop; }
    },
    // Sends everything queued now; the promise resolves (never rejects) when done or deferred.
    flush: function () {
      try {
        sessions.forEach(flushSeek);
        return drain(true);
      } catch (err) {
        log("internal error", err);
        return Promise.resolve();
      }
    },
  };
  if (config.debug) Object.defineProperty(api, "_debug", { get: snapshot, enumerable: false });
  window.vidpulse = api;

  guard(function () {
    loadStored();
    window.addEventListener("pagehide", guard(onPageHide));
    document.addEventListener("visibilitychange", guard(function () {
      if (document.visibilityState === "hidden") onHidden();
    }));
    window.addEventListener("online", guard(function () { Q.retryAt = 0; schedule(0); }));
    if (typeof MutationObserver === "function") {
      new MutationObserver(guard(onMutations)).observe(document.documentElement, {
        childList: true, subtree: true, attributes: true, attributeFilter: [VIDEO_ATTR],
      });
    }
    scan(document.documentElement);
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", guard(function () { scan(document.documentElement); }));
    }
    log("ready", config);
    // Lets code that ran before this deferred script (e.g. a React effect) wait for it.
    window.dispatchEvent(new Event("vidpulse:ready"));
  })();
})(window, document);
