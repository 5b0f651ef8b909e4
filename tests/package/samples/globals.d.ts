// Names the documentation's snippets take from their surroundings.
declare var senderSocketId: string;
declare var socketId: string;
declare var channel: string;
declare var authToken: string;
declare var socket: WebSocket;
