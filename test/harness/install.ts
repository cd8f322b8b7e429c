// Which install of intermission the test nodes run, chosen by INTERMISSION_INSTALL:
//   copy (default)  the image's /opt/intermission: dist/ and nginx/ copied, the README's
//                   fallback install;
//   luarocks        the tree /opt/rocks that `luarocks make` filled in the
//                   <image>-luarocks image (test/docker/luarocks.Dockerfile), which has no
//                   /opt/intermission, so a node finds intermission only in that tree.
// scripts/images.sh builds both images and derives the second name the same way.

const install = process.env.INTERMISSION_INSTALL ?? "copy";
if (install !== "copy" && install !== "luarocks") throw new Error(`INTERMISSION_INSTALL must be copy or luarocks, got ${install}`);

/** The image under test; a worktree building its own dist/ sets INTERMISSION_IMAGE to keep it apart. */
const base = process.env.INTERMISSION_IMAGE ?? "intermission:latest";

/** The image for an install: intermission:latest, or intermission-luarocks:latest. */
export function imageFor(kind: "copy" | "luarocks"): string {
  if (kind === "copy") return base;
  const tagAt = base.lastIndexOf(":") > base.lastIndexOf("/") ? base.lastIndexOf(":") : base.length;
  return `${base.slice(0, tagAt)}-luarocks${base.slice(tagAt)}`;
}

export const INSTALL = install;
export const IMAGE = imageFor(install);

const ROCK_LUA = "/opt/rocks/share/lua/5.1";
/** lua_package_path: intermission's directory first, then nginx's defaults (resty.core, cjson). */
export const LUA_PACKAGE_PATH = install === "luarocks" ? `${ROCK_LUA}/?.lua;${ROCK_LUA}/?/init.lua;;` : "/opt/intermission/dist/?.lua;;";
/** The http-level directives: the rock installs them beside its modules. */
export const CONF_INCLUDE = install === "luarocks" ? `${ROCK_LUA}/intermission/intermission.conf` : "/opt/intermission/nginx/intermission.conf";
