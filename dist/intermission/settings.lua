local ____exports = {}
local ____config = require("intermission.config")
local defaults = ____config.defaults
____exports.settings = {
    cfg = defaults(),
    ready = false
}
return ____exports
