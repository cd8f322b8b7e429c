// Just enough of nginx's configuration syntax to find directives and copy them verbatim:
// tokens, quotes, comments, blocks, `include` (expanded from `nginx -T`'s dump), and
// lua-nginx-module's *_by_lua_block, whose body is Lua and is read by Lua's rules.
import path from "node:path";
export class ConfError extends Error {
}
/** `nginx -T` prints every file it read as "# configuration file PATH:" and its text. */
export function splitDump(dump) {
    const files = new Map();
    const header = /^# configuration file (.+):$/gm;
    const marks = [...dump.matchAll(header)];
    marks.forEach((m, i) => {
        const start = m.index + m[0].length + 1;
        const end = i + 1 < marks.length ? marks[i + 1].index : dump.length;
        // -T adds one newline after each file.
        files.set(m[1], dump.slice(start, end).replace(/\n$/, ""));
    });
    return files;
}
const SPACE = /\s/;
/** Where a Lua block that starts at text[open] === "{" ends (the index of its "}"). */
function luaBlockEnd(text, open, file) {
    let depth = 0;
    let i = open;
    const longBracket = (at) => {
        // "[" "="* "[" : returns the level, or -1 if not a long bracket.
        const m = /^\[(=*)\[/.exec(text.slice(at, at + 100));
        return m ? m[1].length : -1;
    };
    const skipLong = (at, level) => {
        const close = "]" + "=".repeat(level) + "]";
        const end = text.indexOf(close, at + level + 2);
        if (end < 0)
            throw new ConfError(`${file}: unterminated Lua long string or comment`);
        return end + close.length;
    };
    while (i < text.length) {
        const c = text[i];
        if (c === "-" && text[i + 1] === "-") {
            const level = longBracket(i + 2);
            if (level >= 0)
                i = skipLong(i + 2, level);
            else {
                const nl = text.indexOf("\n", i);
                i = nl < 0 ? text.length : nl + 1;
            }
            continue;
        }
        if (c === '"' || c === "'") {
            i++;
            while (i < text.length && text[i] !== c)
                i += text[i] === "\\" ? 2 : 1;
            i++;
            continue;
        }
        if (c === "[") {
            const level = longBracket(i);
            if (level >= 0) {
                i = skipLong(i, level);
                continue;
            }
        }
        if (c === "{")
            depth++;
        if (c === "}" && --depth === 0)
            return i;
        i++;
    }
    throw new ConfError(`${file}: unterminated Lua block`);
}
/** Parses one file's text into directives (includes left as they are). */
export function parse(text, file) {
    let i = 0;
    const root = [];
    const stack = [{ list: root, start: 0 }];
    let words = [];
    let start = -1;
    // The line of an offset, counted forward: directives come in text order.
    let lineAt = 0;
    let line = 1;
    const lineOf = (offset) => {
        for (; lineAt < offset; lineAt++)
            if (text[lineAt] === "\n")
                line++;
        return line;
    };
    const word = () => {
        const c = text[i];
        if (c === '"' || c === "'") {
            let out = "";
            i++;
            while (i < text.length && text[i] !== c) {
                if (text[i] === "\\" && i + 1 < text.length) {
                    out += text[i + 1];
                    i += 2;
                }
                else
                    out += text[i++];
            }
            if (i >= text.length)
                throw new ConfError(`${file}: unterminated quoted string`);
            i++;
            return out;
        }
        let out = "";
        while (i < text.length && !SPACE.test(text[i]) && text[i] !== ";" && text[i] !== "{" && text[i] !== "}") {
            if (text[i] === "$" && text[i + 1] === "{") {
                const end = text.indexOf("}", i);
                out += text.slice(i, end + 1);
                i = end + 1;
            }
            else
                out += text[i++];
        }
        return out;
    };
    while (i < text.length) {
        const c = text[i];
        if (SPACE.test(c)) {
            i++;
        }
        else if (c === "#") {
            const nl = text.indexOf("\n", i);
            i = nl < 0 ? text.length : nl + 1;
        }
        else if (c === ";") {
            if (words.length === 0)
                throw new ConfError(`${file}: unexpected ";"`);
            stack[stack.length - 1].list.push({ name: words[0], args: words.slice(1), raw: text.slice(start, i + 1), file, line: lineOf(start) });
            words = [];
            i++;
        }
        else if (c === "{") {
            if (words.length === 0)
                throw new ConfError(`${file}: unexpected "{"`);
            if (words[0].endsWith("_by_lua_block")) {
                const end = luaBlockEnd(text, i, file);
                stack[stack.length - 1].list.push({ name: words[0], args: [text.slice(i + 1, end)], raw: text.slice(start, end + 1), file, line: lineOf(start) });
                words = [];
                i = end + 1;
                continue;
            }
            const block = { name: words[0], args: words.slice(1), raw: "", file, line: lineOf(start), children: [] };
            stack[stack.length - 1].list.push(block);
            stack.push({ list: block.children, open: block, start });
            words = [];
            i++;
        }
        else if (c === "}") {
            const top = stack.pop();
            if (!top?.open || words.length > 0)
                throw new ConfError(`${file}: unexpected "}"`);
            top.open.raw = text.slice(top.start, i + 1);
            i++;
        }
        else {
            if (words.length === 0)
                start = i;
            words.push(word());
        }
    }
    if (stack.length > 1 || words.length > 0)
        throw new ConfError(`${file}: unexpected end of file`);
    return root;
}
/** An nginx include pattern (glob(3): * ? [...]) as a regular expression over paths. */
function globToRegExp(pattern) {
    let re = "";
    for (let i = 0; i < pattern.length; i++) {
        const c = pattern[i];
        if (c === "*")
            re += "[^/]*";
        else if (c === "?")
            re += "[^/]";
        else if (c === "[") {
            const end = pattern.indexOf("]", i + 2);
            if (end < 0)
                re += "\\[";
            else {
                re += "[" + pattern.slice(i + 1, end).replace(/^!/, "^").replace(/\\/g, "\\\\") + "]";
                i = end;
            }
        }
        else
            re += c.replace(/[.+^${}()|\\]/g, "\\$&");
    }
    return new RegExp(`^${re}$`);
}
/**
 * The main file's directives with every `include` replaced by the directives of the files
 * it names, as nginx reads them (relative patterns from the main file's directory, matches
 * in name order).
 */
export function expand(files, mainFile) {
    const confPrefix = path.dirname(mainFile);
    const load = (file, depth) => {
        if (depth > 20)
            throw new ConfError(`${file}: includes nested too deep`);
        const text = files.get(file);
        if (text === undefined)
            throw new ConfError(`${file}: not in nginx -T's output`);
        return resolve(parse(text, file), depth);
    };
    const resolve = (list, depth) => list.flatMap((d) => {
        if (d.name === "include" && !d.children) {
            const pattern = path.resolve(confPrefix, d.args[0] ?? "");
            const re = globToRegExp(pattern);
            const matches = [...files.keys()].filter((f) => re.test(f)).sort();
            return matches.flatMap((f) => load(f, depth + 1));
        }
        return d.children ? [{ ...d, children: resolve(d.children, depth) }] : [d];
    });
    return load(mainFile, 0);
}
