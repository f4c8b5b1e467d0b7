"""mitmproxy script (`-s`) that loads the codexgate addon chain into mitmdump or mitmweb."""

from codexgate.addons import chain

addons = chain()
