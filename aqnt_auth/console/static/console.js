// The console's only script: a copy button beside a newly shown key.
// Without it the key is still in a read-only field to select and copy.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    var status = document.querySelector(".copy-status");
    if (!field) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      var done = function () { if (status) { status.textContent = "Copied to the clipboard."; } };
      var fallback = function () {
        field.focus();
        field.select();
        try { document.execCommand("copy"); done(); } catch (e) {
          if (status) { status.textContent = "Select the key and copy it (Ctrl+C or Cmd+C)."; }
        }
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done, fallback);
      } else {
        fallback();
      }
    });
  });
  document.querySelectorAll("input.key-value").forEach(function (field) {
    field.addEventListener("focus", function () { field.select(); });
  });
});
