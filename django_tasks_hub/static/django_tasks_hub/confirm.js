/* django-tasks-hub admin: a form with data-th-confirm asks before it is sent (no inline script,
   so a strict Content-Security-Policy allows it). */
"use strict";
document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute && event.target.getAttribute("data-th-confirm");
    if (message && !window.confirm(message)) {
        event.preventDefault();
    }
});
