/* handover admin pages.
 *
 * - Every form with data-confirm (on the form or on the pressed submit button) asks first.
 * - Forms marked data-async (the worker page's drain and cancel forms) are sent with fetch,
 *   so the page, its live stream and its timers survive the click; without JavaScript they
 *   post normally and the server answers 303.
 * - On the worker page (#initial-status present) the status is rendered from the embedded JSON,
 *   then kept live from the Server-Sent Events of /api/events.
 *
 * No inline scripts or styles anywhere (the pages run under a strict Content-Security-Policy).
 */
(function () {
  'use strict';

  var ORDER = ['starting', 'running', 'draining', 'checkpointing', 'releasing', 'deregistering', 'stopped'];
  var TICK_MS = 100;
  var QUIET_POLL_MS = 5000;

  function $(id) { return document.getElementById(id); }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setText(node, text) {
    if (!node) return;
    text = String(text);
    if (node.textContent !== text) node.textContent = text;
  }

  function cssToken(value) {
    return String(value == null ? '' : value).toLowerCase().replace(/[^a-z0-9_-]/g, '');
  }

  /* ------------------------------------------------------------------ time */

  // RFC 3339 with any number of fractional digits (the server sends nanoseconds).
  function parseTime(value) {
    if (typeof value !== 'string' || value === '') return NaN;
    var m = /^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(\.\d+)?\s*(Z|[+-]\d\d:?\d\d)?$/i.exec(value.trim());
    if (!m) return Date.parse(value);
    var frac = m[3] ? (m[3] + '000').slice(0, 4) : '';
    var zone = m[4] ? m[4].toUpperCase() : 'Z';
    if (zone !== 'Z' && zone.indexOf(':') < 0) zone = zone.slice(0, 3) + ':' + zone.slice(3);
    return Date.parse(m[1] + 'T' + m[2] + frac + zone);
  }

  var skew = 0; // server clock minus this browser's clock, when the server says what time it is
  function now() { return Date.now() + skew; }

  function pad(n, width) {
    var s = String(n);
    while (s.length < (width || 2)) s = '0' + s;
    return s;
  }

  function fmtClock(t) {
    if (!isFinite(t)) return '';
    var d = new Date(t);
    var today = new Date(now());
    var clock = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + '.' + pad(d.getMilliseconds(), 3);
    if (d.toDateString() !== today.toDateString()) {
      return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + clock;
    }
    return clock;
  }

  // A finished duration: precise for short phases.
  function fmtDuration(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return '—';
    if (ms < 0) ms = 0;
    if (ms < 10) return ms.toFixed(2) + ' ms';
    if (ms < 100) return ms.toFixed(1) + ' ms';
    if (ms < 1000) return Math.round(ms) + ' ms';
    return fmtLong(ms, 2);
  }

  // A running counter: steady width, tenths of a second.
  function fmtElapsed(ms) {
    if (!isFinite(ms)) return '—';
    if (ms < 0) ms = 0;
    return fmtLong(ms, 1);
  }

  function fmtLong(ms, decimals) {
    var s = ms / 1000;
    if (s < 60) return s.toFixed(s < 10 ? decimals : 1) + ' s';
    var m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + pad(Math.floor(s % 60)) + 's';
    var h = Math.floor(m / 60);
    if (h < 48) return h + 'h ' + pad(m % 60) + 'm';
    return Math.floor(h / 24) + 'd ' + pad(h % 24) + 'h';
  }

  /* ---------------------------------------------------- confirm + submit */

  function flash(message, isError) {
    var box = $('action-message');
    if (!box) {
      if (isError) window.alert(message);
      return;
    }
    box.textContent = message;
    box.classList.toggle('is-bad', !!isError);
    box.hidden = false;
    window.clearTimeout(flash.timer);
    if (!isError) flash.timer = window.setTimeout(function () { box.hidden = true; }, 8000);
  }

  function errorText(res) {
    return res.text().then(function (body) {
      try {
        var parsed = JSON.parse(body);
        if (parsed && parsed.error) return String(parsed.error);
      } catch (e) { /* not JSON */ }
      return 'HTTP ' + res.status;
    }, function () { return 'HTTP ' + res.status; });
  }

  function submitAsync(form, submitter) {
    var body = new URLSearchParams();
    new FormData(form).forEach(function (value, key) {
      if (typeof value === 'string') body.append(key, value);
    });
    if (submitter && submitter.name) body.append(submitter.name, submitter.value);
    var label = submitter && submitter.textContent ? submitter.textContent.trim() : 'Request';
    var action = form.getAttribute('action') || window.location.pathname;

    form.dataset.busy = '1';
    form.classList.add('is-busy');
    var done = function () {
      delete form.dataset.busy;
      form.classList.remove('is-busy');
    };
    return window.fetch(action, {
      method: 'POST',
      body: body,
      credentials: 'same-origin',
      redirect: 'manual',
      headers: { 'Accept': 'text/html, application/json;q=0.9' }
    }).then(function (res) {
      // A form post is answered with 303 back to the page: with redirect "manual" that is an
      // opaque redirect, which means the server took it.
      if (res.type === 'opaqueredirect' || (res.status >= 200 && res.status < 400)) {
        var reason = form.querySelector('input[name="reason"]');
        if (reason) reason.value = '';
        flash(label + ': requested.', false);
        if (!liveConnected()) pollStatus();
        return;
      }
      if (res.status === 401) {
        flash('Your session has expired. Reload the page to log in again.', true);
        return;
      }
      return errorText(res).then(function (text) { flash(label + ' failed: ' + text, true); });
    }, function () {
      flash(label + ' failed: the worker could not be reached.', true);
    }).then(done, done);
  }

  document.addEventListener('submit', function (ev) {
    var form = ev.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (form.dataset.busy === '1') { ev.preventDefault(); return; }
    var submitter = ev.submitter || null;
    var message = (submitter && submitter.getAttribute('data-confirm')) || form.getAttribute('data-confirm');
    if (message) {
      var mode = form.querySelector('select[name="mode"]');
      if (mode && mode.selectedIndex >= 0) message += '\n\nMode: ' + mode.options[mode.selectedIndex].text;
      var reason = form.querySelector('input[name="reason"]');
      if (reason && reason.value.trim()) message += '\nReason: ' + reason.value.trim();
      if (!window.confirm(message)) { ev.preventDefault(); return; }
    }
    if (form.hasAttribute('data-async') && window.fetch && window.URLSearchParams) {
      ev.preventDefault();
      submitAsync(form, submitter);
      return;
    }
    form.dataset.busy = '1'; // a plain post: ignore a second click while it is under way
  });

  // Back/forward cache: a page restored after a plain post must accept clicks again.
  window.addEventListener('pageshow', function () {
    Array.prototype.forEach.call(document.querySelectorAll('form[data-busy]'), function (form) {
      delete form.dataset.busy;
      form.classList.remove('is-busy');
    });
  });

  /* ------------------------------------------------------- the live page */

  var initialNode = $('initial-status');
  if (!initialNode) return;

  var last = null;          // the last status rendered
  var stopped = false;
  var source = null;
  var retryDelay = 1000;
  var reconnectTimer = 0;
  var lastMessageAt = 0;
  var messageSeq = 0;
  var baseTitle = document.title;
  var live = { current: null, shutdownStart: NaN, shutdownEnd: NaN };
  var stale = false;        // the stream is down: what is shown may be out of date

  function setStale(value) {
    stale = value;
    document.body.classList.toggle('is-stale', value);
  }

  function liveConnected() {
    return !!source && source.readyState === 1;
  }

  function setLive(state, text) {
    var node = $('live');
    if (!node) return;
    if (node.getAttribute('data-state') !== state) node.setAttribute('data-state', state);
    setText($('live-text'), text);
  }

  function badge(text, className, title) {
    var b = el('span', 'badge ' + className, text);
    if (title) b.title = title;
    return b;
  }

  function replaceChildren(parent, children) {
    while (parent.firstChild) parent.removeChild(parent.firstChild);
    children.forEach(function (c) { parent.appendChild(c); });
  }

  function renderPhase(s) {
    var phase = String(s.phase || 'unknown');
    var node = $('phase');
    if (node) {
      setText(node, phase);
      var cls = 'badge badge-lg phase-' + cssToken(phase);
      if (node.className !== cls) node.className = cls;
    }
    document.title = phase + ' · ' + baseTitle;
  }

  function renderHealth(s) {
    var phase = String(s.phase || '');
    var ready = s.ready === true;
    var storeUp = s.store_up !== false;
    var readyNode = $('ready');
    if (readyNode) {
      setText(readyNode, ready ? 'ready' : 'not ready');
      readyNode.className = 'badge ' + (ready ? 'is-ok' : (phase === 'running' ? 'is-bad' : 'is-warn'));
    }
    var storeNode = $('store');
    if (storeNode) {
      setText(storeNode, storeUp ? 'store up' : 'store down');
      storeNode.className = 'badge ' + (storeUp ? 'is-ok' : 'is-bad');
    }
    setText($('health-sub'), '/readyz answers ' + (ready ? '200' : '503') + (storeUp ? '' : ' · store unreachable'));
  }

  function renderShutdown(s) {
    var info = $('shutdown-info');
    if (info) {
      var parts = [];
      if (s.trigger) {
        parts.push(badge(s.trigger, 'is-neutral', 'trigger'));
        if (s.mode) parts.push(badge(s.mode, 'is-neutral', 'mode'));
        if (s.outcome) parts.push(badge(s.outcome, 'outcome-' + cssToken(s.outcome), 'outcome'));
      } else {
        parts.push(el('span', 'muted', 'none requested'));
      }
      replaceChildren(info, parts);
    }
    var detail = '';
    if (s.reason) detail += '“' + s.reason + '”';
    if (s.requested_by) detail += (detail ? ' ' : '') + 'by ' + s.requested_by;
    setText($('shutdown-detail'), detail);
  }

  // Which phases lie ahead of the current one, in the machine's order.
  function upcoming(phase) {
    var i = ORDER.indexOf(phase);
    if (i < 0 || phase === 'stopped') return [];
    return ORDER.slice(i + 1);
  }

  function renderTimeline(s) {
    var list = $('timeline');
    var phases = Array.isArray(s.phases) ? s.phases : [];
    var items = [];
    live.current = null;
    live.shutdownStart = NaN;
    live.shutdownEnd = NaN;

    phases.forEach(function (p, i) {
      var name = String(p.phase || '');
      var entered = parseTime(p.entered_at);
      var isCurrent = (p.duration_ms === null || p.duration_ms === undefined) && i === phases.length - 1;
      var li = el('li', 'tl-item phase-' + cssToken(name) + (isCurrent ? ' is-current' : ' is-done'));
      li.setAttribute('data-phase', name);
      li.appendChild(el('span', 'tl-dot'));
      li.appendChild(el('span', 'tl-name', name));
      var dur = el('span', 'tl-dur');
      if (!isCurrent) dur.textContent = fmtDuration(Number(p.duration_ms));
      else if (name === 'stopped') dur.textContent = '—';
      li.appendChild(dur);
      var at = el('span', 'tl-at', isFinite(entered) ? fmtClock(entered) : (p.entered_at || ''));
      if (p.entered_at) at.title = p.entered_at;
      li.appendChild(at);
      items.push(li);

      if (name === 'running' || name === 'starting') {
        live.shutdownStart = NaN; // a cancelled drain: the next shutdown starts afresh
        live.shutdownEnd = NaN;
      } else if (!isFinite(live.shutdownStart)) {
        live.shutdownStart = entered;
      }
      if (name === 'stopped') live.shutdownEnd = entered;
      if (isCurrent && name !== 'stopped') live.current = { node: dur, entered: entered, phase: name };
    });

    var currentPhase = String(s.phase || (phases.length ? phases[phases.length - 1].phase : ''));
    upcoming(currentPhase).forEach(function (name) {
      var li = el('li', 'tl-item is-pending');
      li.setAttribute('data-phase', name);
      li.setAttribute('data-pending', '');
      li.appendChild(el('span', 'tl-dot'));
      li.appendChild(el('span', 'tl-name', name));
      li.appendChild(el('span', 'tl-dur', ''));
      li.appendChild(el('span', 'tl-at', ''));
      items.push(li);
    });
    if (list) replaceChildren(list, items);
  }

  function checkpointText(cp) {
    if (cp === null || cp === undefined) return '—';
    if (typeof cp === 'string') return cp;
    try { return JSON.stringify(cp); } catch (e) { return String(cp); }
  }

  function renderInFlight(s) {
    var table = $('in-flight');
    if (!table || !table.tBodies.length) return;
    var jobs = Array.isArray(s.in_flight) ? s.in_flight : [];
    setText($('in-flight-count'), jobs.length);
    if (typeof s.held === 'number') setText($('held-count'), s.held);
    var rows = jobs.map(function (j) {
      var tr = el('tr');
      tr.setAttribute('data-job-id', String(j.job_id));
      if (j.started_at) tr.setAttribute('data-started-at', String(j.started_at));
      var cell = function (label, className, child) {
        var td = el('td', className);
        td.setAttribute('data-label', label);
        if (child instanceof Node) td.appendChild(child);
        else if (child !== undefined) td.textContent = String(child);
        tr.appendChild(td);
        return td;
      };
      cell('Job', 'num-id', '#' + j.job_id);
      cell('Kind', '', j.kind || '');
      cell('Attempt', 'num', j.attempt === undefined ? '' : j.attempt);
      var state = String(j.state || 'running');
      cell('State', '', badge(state, 'state-' + cssToken(state)));
      var started = parseTime(j.started_at);
      cell('Running for', 'num cell-elapsed', isFinite(started) ? fmtElapsed(now() - started) : '—');
      var progressTd = cell('Progress', 'cell-progress');
      var p = typeof j.progress === 'number' && isFinite(j.progress) ? Math.max(0, Math.min(1, j.progress)) : null;
      if (p === null) {
        progressTd.appendChild(el('span', 'muted', '—'));
      } else {
        var bar = el('progress');
        bar.max = 100;
        bar.value = Math.round(p * 1000) / 10;
        progressTd.appendChild(bar);
        progressTd.appendChild(el('span', 'num', (p * 100).toFixed(p < 0.1 ? 1 : 0) + '%'));
      }
      var text = checkpointText(j.checkpoint);
      var span = el('span', 'truncate', text);
      span.title = text;
      cell('Checkpoint', 'cell-checkpoint mono', span);
      var out = j.output || null;
      var line = '';
      if (out) {
        var all = String(out.stdout || '').split('\n').concat(String(out.stderr || '').split('\n'));
        var outLines = String(out.stdout || '').split('\n').filter(function (l) { return l.trim() !== ''; });
        if (!outLines.length) outLines = String(out.stderr || '').split('\n').filter(function (l) { return l.trim() !== ''; });
        line = outLines.length ? outLines[outLines.length - 1] : '';
        var outSpan = el('span', 'truncate', line);
        outSpan.title = all.join('\n');
        cell('Output', 'cell-output mono', line ? outSpan : el('span', 'muted', '—'));
      } else {
        cell('Output', 'cell-output mono', el('span', 'muted', '—'));
      }
      return tr;
    });
    if (!rows.length) {
      var empty = el('tr', 'empty');
      var td = el('td', '', 'No jobs in flight.');
      td.colSpan = 8;
      empty.appendChild(td);
      rows.push(empty);
    }
    replaceChildren(table.tBodies[0], rows);
  }

  function renderActions(s) {
    var phase = String(s.phase || '');
    var drain = $('drain-form');
    var cancel = $('cancel-form');
    var note = $('actions-note');
    var cancellable = s.cancellable === true && !stopped;
    if (drain) drain.hidden = phase !== 'running' || stopped;
    if (cancel) cancel.hidden = !cancellable;
    if (note) {
      var text = '';
      if (phase === 'stopped') {
        text = 'The worker has stopped.';
      } else if (phase === 'starting') {
        text = 'The worker is starting; it can be drained once it is running.';
      } else if (phase !== 'running' && !cancellable) {
        var bySignal = s.trigger === 'sigterm' || s.trigger === 'sigint';
        text = bySignal
          ? 'A shutdown started by ' + s.trigger.toUpperCase() + ' is under way; it cannot be cancelled.'
          : 'A shutdown is under way; past draining it can no longer be cancelled.';
      }
      setText(note, text);
      note.hidden = text === '';
    }
  }

  function renderStopped(s) {
    var banner = $('stopped-banner');
    var outcome = s.outcome ? String(s.outcome) : 'unknown';
    if (banner) {
      setText($('stopped-outcome'), outcome);
      banner.className = 'banner banner-stopped outcome-' + cssToken(outcome);
      banner.hidden = false;
    }
    ['drain-form', 'cancel-form'].forEach(function (id) {
      var form = $(id);
      if (!form) return;
      Array.prototype.forEach.call(form.elements, function (control) { control.disabled = true; });
    });
    var conn = $('connection-banner');
    if (conn) conn.hidden = true;
    setStale(false);
  }

  function render(s) {
    if (!s || typeof s !== 'object') return;
    if (typeof s.now === 'string') {
      var serverNow = parseTime(s.now);
      if (isFinite(serverNow)) skew = serverNow - Date.now();
    }
    last = s;
    if (s.phase === 'stopped') stopped = true;
    renderPhase(s);
    renderHealth(s);
    renderShutdown(s);
    renderTimeline(s);
    renderInFlight(s);
    renderActions(s);
    if (stopped) {
      renderStopped(s);
      closeStream();
      setLive('ended', 'ended');
    }
    tick();
  }

  function safeRender(s) {
    try {
      render(s);
    } catch (err) {
      // Never leave the page blank or half-broken: keep what is shown, say so in the console.
      if (window.console) console.error('handover: could not render status', err);
    }
  }

  /* ----------------------------------------------------- clock-driven bits */

  function tick() {
    if (!last || stale) return; // frozen while disconnected: no counters that look alive
    var t = now();
    try {
      var cur = live.current;
      if (cur && cur.node && isFinite(cur.entered)) setText(cur.node, fmtElapsed(t - cur.entered));

      var since = $('phase-since');
      if (since) {
        if (cur && isFinite(cur.entered)) setText(since, 'since ' + fmtClock(cur.entered) + ' · ' + fmtElapsed(t - cur.entered));
        else if (stopped && isFinite(live.shutdownEnd)) setText(since, 'since ' + fmtClock(live.shutdownEnd));
      }

      var total = $('shutdown-total');
      if (total) {
        if (isFinite(live.shutdownStart)) {
          var end = isFinite(live.shutdownEnd) ? live.shutdownEnd : t;
          setText(total, (isFinite(live.shutdownEnd) ? 'shutdown took ' : 'shutdown running for ') + fmtElapsed(end - live.shutdownStart));
        } else {
          setText(total, '');
        }
      }

      tickDeadline(t);
      tickForecast(t);

      var rows = document.querySelectorAll('#in-flight tr[data-started-at]');
      Array.prototype.forEach.call(rows, function (tr) {
        var started = parseTime(tr.getAttribute('data-started-at'));
        var td = tr.querySelector('.cell-elapsed');
        if (td && isFinite(started)) setText(td, fmtElapsed(t - started));
      });
    } catch (err) {
      if (window.console) console.error('handover: tick failed', err);
    }
  }

  function fmtSeconds(sec) {
    if (!isFinite(sec) || sec < 0) sec = 0;
    if (sec < 10) return sec.toFixed(1) + ' s';
    if (sec < 120) return Math.round(sec) + ' s';
    return (sec / 60).toFixed(1) + ' min';
  }

  // The drain forecast of the last status, carried forward to now: work at risk grows with each
  // running job, and each job's next checkpoint comes closer (never below zero).
  function tickForecast(t) {
    if (!$('drain-forecast') || typeof last.drain_eta_seconds !== 'number') return;
    var at = parseTime(last.now);
    var dt = isFinite(at) ? Math.max(0, (t - at) / 1000) : 0;
    var jobs = Array.isArray(last.in_flight) ? last.in_flight : [];
    var risk = 0, etaThen = 0, etaNow = 0;
    jobs.forEach(function (j) {
      var running = j.state === 'running';
      if (typeof j.since_checkpoint_ms === 'number') risk += j.since_checkpoint_ms / 1000 + (running ? dt : 0);
      if (typeof j.next_checkpoint_eta_ms === 'number') {
        etaThen = Math.max(etaThen, j.next_checkpoint_eta_ms / 1000);
        etaNow = Math.max(etaNow, j.next_checkpoint_eta_ms / 1000 - (running ? dt : 0));
      }
    });
    var delay = Math.max(0, last.drain_eta_seconds - etaThen);
    setText($('drain-eta'), fmtSeconds(stopped ? 0 : delay + etaNow));
    setText($('work-at-risk'), fmtSeconds(stopped ? 0 : risk));
    var unknown = Number(last.drain_eta_unknown_jobs) || 0;
    var unknownNote = $('drain-eta-unknown');
    if (unknownNote) unknownNote.hidden = unknown === 0;
    setText($('drain-eta-unknown-count'), unknown);
    var warning = $('drain-force-warning');
    if (warning) warning.hidden = !(last.drain_would_force === true) || stopped;
    if (typeof last.drain_allowance_seconds === 'number') setText($('drain-allowance'), fmtSeconds(last.drain_allowance_seconds));
    if (typeof last.drain_eta_worst_seconds === 'number') setText($('drain-eta-worst'), fmtSeconds(last.drain_eta_worst_seconds));
  }

  function tickDeadline(t) {
    var card = $('deadline');
    if (!card) return;
    var deadline = parseTime(last.deadline);
    if (!last.deadline || !isFinite(deadline) || stopped) {
      card.hidden = true;
      return;
    }
    card.hidden = false;
    var left = deadline - t;
    setText($('deadline-left'), left > 0 ? (left / 1000).toFixed(1) + ' s left' : 'deadline passed');
    card.classList.toggle('is-urgent', left < 5000);
    card.classList.toggle('is-passed', left <= 0);
    var bar = $('deadline-bar');
    if (bar) {
      var span = isFinite(live.shutdownStart) ? deadline - live.shutdownStart : NaN;
      var fraction = span > 0 ? Math.max(0, Math.min(1, left / span)) : (left > 0 ? 1 : 0);
      bar.value = Math.round(fraction * 1000);
    }
    setText($('deadline-at'), 'forced path at ' + fmtClock(deadline));
  }

  /* --------------------------------------------------------- the stream */

  function closeStream() {
    window.clearTimeout(reconnectTimer);
    if (source) {
      source.close();
      source = null;
    }
  }

  function showConnectionLost() {
    var banner = $('connection-banner');
    if (!banner || stopped) return;
    var detail = 'Retrying…';
    if (last) {
      detail = 'Last update at ' + fmtClock(lastMessageAt ? lastMessageAt + skew : now()) +
        ' in phase ' + last.phase + '. Retrying…';
      if (last.phase === 'deregistering') detail = 'It was deregistering, so it has most likely exited cleanly. Retrying…';
    }
    setText($('connection-detail'), detail);
    banner.hidden = false;
    setStale(true);
  }

  function onMessage(ev) {
    var s;
    try {
      s = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    messageSeq += 1;
    lastMessageAt = Date.now();
    retryDelay = 1000;
    var banner = $('connection-banner');
    if (banner) banner.hidden = true;
    setStale(false);
    if (!stopped) setLive('live', 'live');
    safeRender(s);
  }

  function onError() {
    if (stopped) {
      closeStream();
      return;
    }
    showConnectionLost();
    setLive('lost', 'reconnecting…');
    if (source && source.readyState === 2) {
      // The browser gave up (a non-200 answer, e.g. 401): find out why, then retry ourselves.
      source = null;
      probeThenReconnect();
    }
  }

  function connect() {
    if (stopped || !window.EventSource) return;
    closeStream();
    setLive('connecting', 'connecting…');
    try {
      source = new EventSource('/api/events');
    } catch (e) {
      scheduleReconnect();
      return;
    }
    source.addEventListener('open', function () {
      retryDelay = 1000;
      setLive('live', 'live');
    });
    source.addEventListener('status', onMessage);
    source.addEventListener('message', onMessage); // a stream without "event: status" lines
    source.addEventListener('error', onError);
  }

  function scheduleReconnect() {
    window.clearTimeout(reconnectTimer);
    if (stopped) return;
    reconnectTimer = window.setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 10000);
  }

  function probeThenReconnect() {
    fetchStatus().then(function (result) {
      if (result === 'unauthorized') {
        setText($('connection-detail'), 'Your session has expired. Reload the page to log in again.');
        setLive('lost', 'logged out');
        return;
      }
      scheduleReconnect();
    });
  }

  // GET /api/status once; applied only if no stream message arrived meanwhile (never go back in time).
  function fetchStatus() {
    if (!window.fetch) return Promise.resolve('unsupported');
    var seq = messageSeq;
    return window.fetch('/api/status', { credentials: 'same-origin', headers: { 'Accept': 'application/json' } })
      .then(function (res) {
        if (res.status === 401) return 'unauthorized';
        if (!res.ok) return 'error';
        return res.json().then(function (s) {
          if (seq === messageSeq && !stopped) {
            lastMessageAt = Date.now();
            setStale(false);
            var banner = $('connection-banner');
            if (banner) banner.hidden = true;
            safeRender(s);
          }
          return 'ok';
        });
      })
      .catch(function () { return 'unreachable'; });
  }

  function pollStatus() {
    if (!stopped) fetchStatus();
  }

  /* ------------------------------------------------------------ start */

  var initial = null;
  try {
    initial = JSON.parse(initialNode.textContent || 'null');
  } catch (e) {
    if (window.console) console.error('handover: unreadable initial status', e);
  }
  if (initial) safeRender(initial);
  lastMessageAt = Date.now();

  window.setInterval(tick, TICK_MS);
  window.setInterval(function () {
    // A quiet stream (the server sends on phase and job changes): refresh now and then.
    if (!stopped && Date.now() - lastMessageAt > QUIET_POLL_MS) {
      lastMessageAt = Date.now();
      pollStatus();
    }
  }, 1000);

  if (!stopped) connect();
})();
