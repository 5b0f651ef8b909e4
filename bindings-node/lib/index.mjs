// ESM entry point: the same objects as the CommonJS one.
import cjs from './index.cjs';

export const { eventsPlugin, getEvents, closeEvents, getEventsFromInstance, EventsManager, version } = cjs;
export default eventsPlugin;
