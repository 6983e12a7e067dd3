// A message's text as DOM nodes: links, mentions and a small Markdown subset. Every piece of
// server text goes in as a text node; no markup string is ever parsed (no innerHTML), so a
// message can only ever produce the elements built here.
//
//   ```            a code block, up to the next ``` line (or the end): shown as it is
//   > quoted       a quote (consecutive lines), its lines formatted like the rest
//   `code`         inline code, shown as it is
//   **bold**  *italic*  _italic_   nested as written (a link or a mention inside them too)
//   http(s)://...  a link (only these two schemes; rel="noopener noreferrer", a new tab)
//   @name          a mention: marked, and highlighted when it names the signed-in user

/** An element with these children (nodes or text, each as a text node); no attributes. */
function el(tag, ...children) {
  const node = document.createElement(tag);
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const WORD = '[\\p{L}\\p{N}_]';
// "@name", ending where the server's mention ends: "@ann." mentions ann
const MENTION_SRC = `(?<![${WORD.slice(1, -1)}@])@[\\p{L}\\p{N}_.-]*[\\p{L}\\p{N}_]`;
const MENTION = new RegExp(MENTION_SRC, 'gu');
// One inline token, by priority where they overlap: code, a link, bold, italic, a mention.
const INLINE = new RegExp([
  '(`[^`\\n]+`)',
  '(https?://[^\\s<>"]+)',
  '(\\*\\*(?=\\S)[\\s\\S]*?\\S\\*\\*)',
  `(\\*(?=[^\\s*])[^*\\n]*?[^\\s*]\\*|\\*[^\\s*]\\*|(?<!${WORD})_(?=[^\\s_])[^_\\n]*?[^\\s_]_(?!${WORD})|(?<!${WORD})_[^\\s_]_(?!${WORD}))`,
  `(${MENTION_SRC})`,
].join('|'), 'gu');

/** A URL ends before trailing punctuation, and before a ")" it did not open. */
function trimUrl(url) {
  let end = url.length;
  while (end > 0) {
    const c = url[end - 1];
    if ('.,;:!?\'*_'.includes(c)) { end -= 1; continue; }
    if (c === ')' && (url.slice(0, end).match(/\(/g) || []).length < (url.slice(0, end).match(/\)/g) || []).length) { end -= 1; continue; }
    break;
  }
  return url.slice(0, end);
}

function isMe(name, me) {
  return !!me && name.toLowerCase() === me.toLowerCase();
}

/** Inline formatting of one stretch of text (no line structure), as nodes. */
function inline(text, me, depth = 0) {
  const out = [];
  let at = 0;
  const plain = (s) => { if (s) out.push(document.createTextNode(s)); };
  INLINE.lastIndex = 0;
  for (let m = INLINE.exec(text); m; m = INLINE.exec(text)) {
    let [token] = m;
    const start = m.index;
    if (m[1]) {
      plain(text.slice(at, start));
      out.push(el('code', token.slice(1, -1)));
    } else if (m[2]) {
      token = trimUrl(token);
      if (!/^https?:\/\/[^/\s]/.test(token)) { INLINE.lastIndex = start + m[0].length; continue; }
      plain(text.slice(at, start));
      const a = el('a', token);
      a.href = token; // http or https: checked above
      a.rel = 'noopener noreferrer';
      a.target = '_blank';
      out.push(a);
    } else if (m[3] && depth < 4) {
      plain(text.slice(at, start));
      out.push(el('strong', inline(token.slice(2, -2), me, depth + 1)));
    } else if (m[4] && depth < 4) {
      plain(text.slice(at, start));
      out.push(el('em', inline(token.slice(1, -1), me, depth + 1)));
    } else if (m[5]) {
      // a name ends where the server's mention does: "@ann." mentions ann
      plain(text.slice(at, start));
      const name = token.slice(1);
      const mention = el('span', token);
      mention.className = isMe(name, me) ? 'mention mention-me' : 'mention';
      out.push(mention);
    } else {
      continue; // nested too deep: the markers stay as text
    }
    at = start + token.length;
    INLINE.lastIndex = at;
  }
  plain(text.slice(at));
  return out;
}

/**
 * The nodes of a message's text (its lines apart by newlines, shown as such: the text keeps
 * its white space, so its textContent is the text without the Markdown markers): blocks (code blocks, quotes, paragraphs of lines) with their
 * inline formatting. `me`: the signed-in user, whose mentions are highlighted.
 */
export function richText(text, me) {
  const lines = String(text).split('\n');
  const out = [];
  let para = [];
  const flush = () => {
    if (!para.length) return;
    para.forEach((line, i) => { if (i) out.push(document.createTextNode('\n')); out.push(...inline(line, me)); });
    para = [];
  };
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i];
    if (line.trimStart().startsWith('```')) {
      flush();
      const code = [];
      for (i += 1; i < lines.length && !lines[i].trimStart().startsWith('```'); i += 1) code.push(lines[i]);
      out.push(el('pre', el('code', code.join('\n'))));
    } else if (/^>\s?/.test(line)) {
      flush();
      const quoted = [];
      for (; i < lines.length && /^>\s?/.test(lines[i]); i += 1) quoted.push(lines[i].replace(/^>\s?/, ''));
      i -= 1;
      out.push(el('blockquote', quoted.flatMap((q, j) => (j ? [document.createTextNode('\n'), ...inline(q, me)] : inline(q, me)))));
    } else {
      para.push(line);
    }
  }
  flush();
  return out;
}

// Reaction shortcodes (as bots send them) shown as their emoji; the reaction keeps its name.
const SHORTCODES = {
  '+1': '👍', thumbsup: '👍', '-1': '👎', thumbsdown: '👎', heart: '❤️', joy: '😂', laughing: '😆',
  smile: '😄', tada: '🎉', open_mouth: '😮', eyes: '👀', fire: '🔥', rocket: '🚀', '100': '💯',
  white_check_mark: '✅', heavy_check_mark: '✔️', x: '❌', wave: '👋', pray: '🙏', clap: '👏',
  thinking: '🤔', ok_hand: '👌', star: '⭐', warning: '⚠️', bug: '🐛', sparkles: '✨', muscle: '💪',
  raised_hands: '🙌', sob: '😭', slightly_smiling_face: '🙂', party_popper: '🎉', coffee: '☕',
};

/** The emoji a reaction shows: a known `:shortcode:` as its emoji, anything else as it is. */
export function emojiOf(reaction) {
  const m = /^:([a-z0-9_+-]+):$/.exec(reaction);
  return (m && Object.hasOwn(SHORTCODES, m[1]) && SHORTCODES[m[1]]) || reaction; // not :constructor:
}

/** The text as the reader sees it, without its Markdown markers (a reply's quote, say). */
export function plainText(text) {
  const box = document.createElement('div');
  box.append(...richText(text, ''));
  return box.textContent.replace(/\s+/g, ' ').trim();
}

/** Whether the text @-mentions `me` (where the page highlights it). */
export function mentions(text, me) {
  MENTION.lastIndex = 0;
  for (let m = MENTION.exec(text); m; m = MENTION.exec(text)) if (isMe(m[0].slice(1), me)) return true;
  return false;
}
