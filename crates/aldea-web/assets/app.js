// Aldea dashboard: the copy buttons (the only script every page has). Pages work without it.
'use strict';

function announce(button, text) {
  // The keys page renders its status element empty (so the change is announced); elsewhere one
  // is added next to the button.
  let status = button.parentElement.querySelector('.copy-status');
  if (!status) {
    status = document.createElement('span');
    status.className = 'copy-status';
    status.setAttribute('role', 'status');
    button.after(status);
  }
  status.textContent = text;
}

async function copyText(button, text) {
  try {
    await navigator.clipboard.writeText(text);
    announce(button, 'Copied');
  } catch (e) {
    announce(button, 'Select the text and copy it by hand');
  }
}

document.addEventListener('click', (event) => {
  const button = event.target.closest('button');
  if (!button) return;
  if (button.dataset.copy) {
    const field = document.getElementById(button.dataset.copy);
    if (field) copyText(button, field.value ?? field.textContent);
  } else if (button.classList.contains('copy-code')) {
    const code = button.parentElement.querySelector('pre');
    if (code) copyText(button, code.textContent);
  }
});
