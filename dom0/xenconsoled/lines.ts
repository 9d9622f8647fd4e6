/**
 * A guest's console output as lines for the host's terminal: bytes in (UTF-8,
 * possibly split anywhere), complete lines out, without the newline. A guest
 * controls these bytes, so what reaches the terminal is defanged: control
 * characters other than tab (escape sequences start with one) are dropped,
 * a carriage return before the newline is dropped, and a line longer than
 * `maxLine` characters is cut into pieces so that a guest that never sends a
 * newline cannot make Dom0 buffer without bound. Pure.
 */
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

export class LineSplitter {
  private readonly dec = new TextDecoder('utf-8', { fatal: false });
  private partial = '';

  constructor(private readonly emit: (line: string) => void, private readonly maxLine = 1024) {}

  push(bytes: Uint8Array): void {
    let text = this.partial + this.dec.decode(bytes, { stream: true });
    for (;;) {
      const nl = text.indexOf('\n');
      if (nl < 0) break;
      this.emitLine(text.slice(0, nl));
      text = text.slice(nl + 1);
    }
    while (text.length > this.maxLine) {
      this.emitLine(text.slice(0, this.maxLine));
      text = text.slice(this.maxLine);
    }
    this.partial = text;
  }

  /** Emit what is left of an unfinished line (the console is going away). */
  end(): void {
    const rest = this.partial + this.dec.decode();
    this.partial = '';
    if (rest.length > 0) this.emitLine(rest);
  }

  private emitLine(raw: string): void {
    const line = raw.replace(/\r$/, '').replace(CONTROL, '');
    if (line.length === 0) {
      this.emit(line);
      return;
    }
    for (let at = 0; at < line.length; at += this.maxLine) this.emit(line.slice(at, at + this.maxLine));
  }
}
