// Fails to load, as a missing optional dependency would: js-ipfs then runs without WebRTC.
throw new Error("fedchain-npm-empty: this optional dependency is deliberately not installed (see package.json)");
