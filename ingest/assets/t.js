/* ensemble tracker for the landing page. No dependencies.
 * <script src="https://COLLECTOR/t.js" async></script>
 * - sends a page_view on load;
 * - keeps the visitor id first-party (localStorage, else created). A QR scan
 *   lands with ?ens=<visit token> (signed by the collector, honoured for
 *   minutes): the tracker removes it from the address bar at once and sends
 *   it with its events; the collector answers with the scanner's visitor id
 *   and placement, which the tracker then keeps. A link copied from the bar
 *   carries no token; an old link's token is refused: either way the opener
 *   stays themself.
 * - ensemble.signup(email, {results: true, newsletter: false}) posts the
 *   sign-up and returns a Promise (resolves on 200, rejects with the answer);
 *   ensemble.ready resolves with the visitor id once the page view is answered;
 * - events not yet confirmed are retried with the same event_id (the
 *   pipeline removes duplicates) and flushed with sendBeacon on page hide. */
(function (w, d) {
  "use strict";
  var me = d.currentScript && d.currentScript.src;
  var base = me ? me.replace(/\/t\.js(\?.*)?$/, "") : "";
  var ID = /^[A-Za-z0-9_-]{8,64}$/, CODE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
  var q = new URLSearchParams(w.location.search);
  function uuid() {
    if (w.crypto && w.crypto.randomUUID) return w.crypto.randomUUID();
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 3) | 8).toString(16);
    });
  }
  function store(k, v) { try { if (v === undefined) return w.localStorage.getItem(k); w.localStorage.setItem(k, v); } catch (e) {} return v; }
  var token = q.get("ens");
  if (token !== null || q.has("vid") || q.has("plc")) {
    // Identity never stays in the address bar, where it would be copied and shared.
    ["ens", "vid", "plc"].forEach(function (k) { q.delete(k); });
    var rest = q.toString();
    try { w.history.replaceState(w.history.state, "", w.location.pathname + (rest ? "?" + rest : "") + w.location.hash); } catch (e) {}
  }
  if (token && token.length > 200) token = null;
  var vid = store("ens_vid");
  if (!vid || !ID.test(vid)) vid = store("ens_vid", "v_" + uuid().replace(/-/g, ""));
  var plc = null;
  // The collector's answer to an event that carried the token.
  function adopt(answer) {
    if (!answer || !token) return;
    if (answer.visitor_id && ID.test(answer.visitor_id)) { vid = store("ens_vid", answer.visitor_id); w.ensemble.visitorId = vid; }
    if (answer.placement && CODE.test(answer.placement)) plc = answer.placement;
    token = null;
  }

  var pending = [], timer = null, backoff = 1000;
  function event(type, extra) {
    var e = { event_id: uuid(), type: type, ts: new Date().toISOString(), visitor_id: vid, url: w.location.href };
    if (d.referrer) e.referrer = d.referrer;
    if (plc && CODE.test(plc)) e.placement = plc;
    if (token) e.visit_token = token;
    for (var k in extra) if (Object.prototype.hasOwnProperty.call(extra, k)) e[k] = extra[k];
    return e;
  }
  function body(events) { return JSON.stringify(events.length === 1 ? events[0] : { batch: events }); }
  function post(events) {
    return fetch(base + "/v1/events", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: body(events), keepalive: true
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (r.status === 503 || r.status === 429) { var err = new Error("retry"); err.retry = true; throw err; }
        if (r.status >= 400) { var bad = new Error((j && j.message) || ("HTTP " + r.status)); bad.answer = j; throw bad; }
        adopt(j);
        return j;
      });
    });
  }
  function retryLater(events) {
    pending = pending.concat(events);
    if (timer) return;
    timer = setTimeout(function () {
      timer = null;
      var batch = pending.splice(0, 100);
      post(batch).then(function () { backoff = 1000; if (pending.length) retryLater([]); })
        .catch(function (e) { if (e.retry || e instanceof TypeError) { backoff = Math.min(backoff * 2, 60000); retryLater(batch); } });
    }, backoff);
  }
  function send(events) {
    return post(events).catch(function (e) {
      if (e.retry || e instanceof TypeError) retryLater(events);
      throw e;
    });
  }
  function flush() {
    if (!pending.length || !navigator.sendBeacon) return;
    var batch = pending.splice(0, 100);
    navigator.sendBeacon(base + "/v1/events", new Blob([body(batch)], { type: "text/plain" }));
  }
  d.addEventListener("visibilitychange", function () { if (d.visibilityState === "hidden") flush(); });
  w.addEventListener("pagehide", flush);

  w.ensemble = {
    visitorId: vid,
    track: function (name, props) { return send([event("custom", { name: name, props: props || {} })]); },
    signup: function (email, consents) {
      return send([event("signup", { email: String(email || ""), consents: {
        results: !!(consents && consents.results), newsletter: !!(consents && consents.newsletter) } })]);
    }
  };
  var loaded = send([event("page_view", {})]);
  w.ensemble.ready = loaded.then(function () { return vid; }, function () { return vid; });
})(window, document);
