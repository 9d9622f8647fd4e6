// msgpackr catches this and decodes strings in JavaScript (see package.json).
throw new Error('msgpackr-extract: native acceleration is not installed in this project');
