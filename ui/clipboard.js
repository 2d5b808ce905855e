// Copying text to the clipboard, for the app's invite links and the guest page's (rtcio-server
// embeds this file from ui/). No dependencies.

/** Copies text: the async clipboard API, else the selection way (older WebKit, no permission). */
export async function copyText(text) {
  try {
    if (navigator.clipboard && typeof navigator.clipboard.writeText === 'function') {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // Fall through to the selection way.
  }
  const before = document.activeElement;
  const ta = document.createElement('textarea');
  ta.value = text;
  ta.setAttribute('readonly', '');
  ta.style.position = 'fixed';
  ta.style.opacity = '0';
  document.body.append(ta);
  ta.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  ta.remove();
  if (before && typeof before.focus === 'function') before.focus();
  return ok;
}
