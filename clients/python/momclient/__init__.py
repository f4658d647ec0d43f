"""momclient: a Python client of the mom broker, written from docs/protocol.md.

    import momclient
    with momclient.connect("127.0.0.1:7878", name="billing") as c:   # an identity
        c.publish("orders.eu", b'{"id": 42}')                         # publish
        c.subscribe("orders.>")                                       # subscribe
        msg, topic = c.recv(timeout=5)                                # the next (message, topic)
        c.destroy()                                                   # remove the identity

Start reading at `client.Client`; `momclient.aio` is the asyncio flavour, on the same codec.
"""

from . import aio, errors
from .client import Client, Consumer, Watch, connect, parse_address
from .errors import (
    BadRequest,
    Conflict,
    ConnectionLost,
    Forbidden,
    Internal,
    MomError,
    NoResponders,
    NotFound,
    RateLimited,
    Timeout,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from .types import Message, Notice, PublishAck, QueueInfo, Sender, TopicInfo, Welcome

__version__ = "0.1.0"

__all__ = [
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionLost",
    "Consumer",
    "Forbidden",
    "Internal",
    "Message",
    "MomError",
    "NoResponders",
    "NotFound",
    "Notice",
    "PublishAck",
    "QueueInfo",
    "RateLimited",
    "Sender",
    "Timeout",
    "TooLarge",
    "TopicInfo",
    "Unauthorized",
    "Unavailable",
    "Watch",
    "Welcome",
    "aio",
    "connect",
    "errors",
    "parse_address",
]
