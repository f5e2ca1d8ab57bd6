// The console's only script: live updates by polling, and the drop form. No library, no build step.
(() => {
  "use strict";
  const token = document.querySelector('meta[name="console-token"]')?.content || "";

  // Run fn now and then every ms milliseconds, never twice at once, not while the tab is hidden.
  const every = (ms, fn) => {
    let busy = false;
    const tick = async () => {
      if (busy || document.hidden) return;
      busy = true;
      try {
        await fn();
      } catch (error) {
        // A missed poll (console restarting, network blip) is retried on the next tick.
      } finally {
        busy = false;
      }
    };
    tick();
    return setInterval(tick, ms);
  };

  const bytes = (count) => {
    if (count < 1024) return `${count} B`;
    if (count < 1024 * 1024) return `${(count / 1024).toFixed(1)} KiB`;
    return `${(count / 1024 / 1024).toFixed(1)} MiB`;
  };

  // The job list: the server renders the rows (escaped) and the page swaps them in.
  const rows = document.getElementById("job-rows");
  if (rows) {
    let shown = null;
    every(2000, async () => {
      const answer = await fetch(rows.dataset.liveSrc, { cache: "no-store" });
      if (!answer.ok) return;
      const html = await answer.text();
      if (html !== shown) {
        if (shown !== null) rows.innerHTML = html;
        shown = html;
      }
      const stamp = document.getElementById("rows-updated");
      if (stamp) stamp.textContent = `Last looked at ${new Date().toLocaleTimeString()}.`;
    });
  }

  // A job's page reloads when its status changes, and stops looking once the job is finished.
  const live = document.getElementById("job-live");
  if (live && live.dataset.finished !== "true") {
    const timer = every(2000, async () => {
      const answer = await fetch(`/api/jobs/${encodeURIComponent(live.dataset.jobId)}`, { cache: "no-store" });
      if (!answer.ok) return;
      const state = await answer.json();
      if (state.status !== live.dataset.status) {
        clearInterval(timer);
        location.reload();
      }
    });
  }

  // After a drop: wait for the pipeline to make the job, then go to its page.
  const waiting = document.getElementById("wait-name");
  if (waiting) {
    const timer = every(1000, async () => {
      const answer = await fetch(`/api/names/${encodeURIComponent(waiting.dataset.name)}`, { cache: "no-store" });
      if (!answer.ok) return;
      const found = await answer.json();
      if (found.url) {
        clearInterval(timer);
        location.replace(found.url);
      }
    });
  }

  const form = document.getElementById("drop-form");
  if (!form) return;

  for (const zone of form.querySelectorAll(".dropzone")) {
    const input = zone.querySelector("input[type=file]");
    const chosen = zone.querySelector(".chosen");
    const show = () => {
      const file = input.files[0];
      chosen.textContent = file ? `${file.name} (${bytes(file.size)})` : "choose or drop a file";
      zone.classList.toggle("has-file", Boolean(file));
    };
    input.addEventListener("change", show);
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      const file = event.dataTransfer.files[0];
      if (!file) return;
      const one = new DataTransfer();
      one.items.add(file);
      input.files = one.files;
      show();
    });
    show();
  }

  const problems = document.getElementById("drop-problems");
  const stage = document.getElementById("drop-stage");
  const progress = document.getElementById("drop-progress");
  const button = document.getElementById("drop-submit");

  const showProblems = (list) => {
    problems.replaceChildren(
      ...list.map((text) => {
        const item = document.createElement("li");
        item.textContent = text;
        return item;
      }),
    );
    problems.hidden = list.length === 0;
  };
  const say = (text) => {
    stage.textContent = text;
    stage.hidden = !text;
  };
  const meter = (label, size) => {
    const row = document.createElement("div");
    row.className = "transfer";
    const name = document.createElement("span");
    name.className = "transfer-name";
    name.textContent = label;
    const bar = document.createElement("progress");
    bar.max = Math.max(size, 1);
    bar.value = 0;
    const text = document.createElement("span");
    text.className = "transfer-bytes";
    row.append(name, bar, text);
    progress.append(row);
    const update = (sent) => {
      bar.value = size ? sent : 1;
      text.textContent = `${bytes(sent)} of ${bytes(size)}`;
    };
    update(0);
    return update;
  };
  const problemsOf = async (answer, fallback) => {
    try {
      return (await answer.json()).problems || [fallback];
    } catch (error) {
      return [fallback];
    }
  };
  const call = (method, url, body) =>
    fetch(url, {
      method,
      body: body === undefined ? undefined : JSON.stringify(body),
      headers: { "X-Console-Token": token, "Content-Type": "application/json" },
    });
  const sendFile = (url, file, onProgress) =>
    new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();
      request.open("PUT", url);
      request.setRequestHeader("X-Console-Token", token);
      request.setRequestHeader("Content-Type", "application/octet-stream");
      request.upload.onprogress = (event) => onProgress(event.loaded);
      request.onload = () => {
        if (request.status < 300) {
          onProgress(file.size);
          resolve();
          return;
        }
        let list = [`${file.name} was refused by the console (HTTP ${request.status})`];
        try {
          list = JSON.parse(request.responseText).problems || list;
        } catch (error) {
          // keep the plain message
        }
        reject(list);
      };
      request.onerror = () => reject(["the console could not be reached; is it still running?"]);
      request.send(file);
    });
  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    showProblems([]);
    progress.replaceChildren();
    let dropId = null;
    try {
      const opened = await call("POST", "/api/drops");
      if (!opened.ok) throw await problemsOf(opened, "the console refused to start a drop");
      dropId = (await opened.json()).drop_id;
      const chosen = [...form.querySelectorAll(".dropzone input[type=file]")].filter((input) => input.files[0]);
      say("Reading the files on this machine…");
      for (const input of chosen) {
        const file = input.files[0];
        const url = `/api/drops/${dropId}/files/${encodeURIComponent(input.name)}?filename=${encodeURIComponent(file.name)}`;
        await sendFile(url, file, meter(`${input.name}: ${file.name}`, file.size));
      }
      say("Checking with the pipeline's rules…");
      const fields = {};
      for (const name of ["name", "model", "resolution", "seed", "order", "prompt"]) fields[name] = form.elements[name].value;
      const checked = await call("POST", `/api/drops/${dropId}/submit`, fields);
      if (!checked.ok) {
        dropId = null; // the console has already forgotten a refused drop
        throw await problemsOf(checked, "the drop was refused");
      }
      const plan = await checked.json();
      say(`Uploading ${plan.name} to the bucket, job.json last…`);
      progress.replaceChildren();
      const meters = new Map();
      for (;;) {
        const answer = await fetch(`/api/drops/${dropId}`, { cache: "no-store" });
        if (!answer.ok) throw await problemsOf(answer, "the upload's progress could not be read");
        const state = await answer.json();
        for (const file of state.files) {
          if (!meters.has(file.label)) meters.set(file.label, meter(file.label, file.size));
          meters.get(file.label)(file.sent);
        }
        if (state.state === "done") break;
        if (state.state === "failed") throw [state.error];
        await pause(250);
      }
      say(`Dropped ${plan.name}. Opening its page…`);
      location.assign(plan.waiting_url);
    } catch (list) {
      if (dropId) call("DELETE", `/api/drops/${dropId}`).catch(() => {});
      say("");
      progress.replaceChildren();
      showProblems(Array.isArray(list) ? list : [String(list)]);
      button.disabled = false;
    }
  });
})();
