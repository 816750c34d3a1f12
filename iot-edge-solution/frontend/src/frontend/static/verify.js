// Polls the second factor's status, counts down, shows the captured image or the reason it failed.
"use strict";
(function () {
  const section = document.getElementById("verify");
  if (!section) { return; }
  const message = document.getElementById("status-message");
  const countdown = document.getElementById("countdown");
  const countdownLine = document.getElementById("countdown-line");
  const retryForm = document.getElementById("retry-form");
  const captured = document.getElementById("captured");
  const image = document.getElementById("captured-image");
  const cancel = document.getElementById("cancel-form");
  const FINAL = ["found", "expired", "rejected", "failed", "signed-out"];
  let secondsLeft = parseInt(section.dataset.secondsLeft, 10);
  let deadline = Number.isNaN(secondsLeft) ? null : Date.now() + secondsLeft * 1000;
  let done = FINAL.includes(section.dataset.state);

  function tick() {
    if (done || deadline === null) { return; }
    countdown.textContent = String(Math.max(0, Math.ceil((deadline - Date.now()) / 1000)));
  }

  function show(status) {
    section.dataset.state = status.state;
    message.textContent = status.message || "";
    message.className = status.state === "pending" || status.state === "found" ? "status" : "error";
    if (typeof status.secondsLeft === "number") { deadline = Date.now() + status.secondsLeft * 1000; }
    countdownLine.hidden = status.state !== "pending" && status.state !== "unavailable";
    retryForm.hidden = status.state === "pending" || status.state === "found";
    if (status.state === "found") {
      image.src = status.image;
      captured.hidden = false;
      cancel.hidden = true;  // the session is signed in now, under a new id: sign out from the account page
    }
    if (status.state === "signed-out") { window.location.assign("/login"); }
    done = FINAL.includes(status.state);
  }

  async function poll() {
    if (done) { return; }
    try {
      const response = await fetch(section.dataset.statusUrl, { credentials: "same-origin", cache: "no-store" });
      show(await response.json());
    } catch (error) {
      show({ state: "unavailable", message: "The sign-in service cannot be reached. Retrying..." });
    }
    if (!done) { window.setTimeout(poll, 1000); }
  }

  window.setInterval(tick, 250);
  tick();
  if (!done) { window.setTimeout(poll, 500); }
}());
