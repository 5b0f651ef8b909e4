// A CommonJS consumer (module: nodenext, a .cts file): require() gets the CommonJS entry.
import vxevents = require('vxevents');
import type { EventsPluginOptions } from 'vxevents';

const options: EventsPluginOptions = { driver: 'sse', heartbeatInterval: 15000 };
const plugin = vxevents.eventsPlugin(options);
const same: typeof plugin = vxevents.default(options);
export = { plugin, same, version: vxevents.version };
