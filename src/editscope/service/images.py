"""The store's images over HTTP: ``GET /v1/images/{sha256}`` (the stored bytes) and
``.../thumbnail`` (a small PNG for the web page). Readers only; the page's cookie works here."""

from __future__ import annotations

import io
import re

from fastapi import Depends, FastAPI
from fastapi.responses import Response
from PIL import Image

from editscope.images import to_rgb
from editscope.service.auth import Principal
from editscope.service.httpkit import ApiError, Context, guard
from editscope.store.images import ImageStoreError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
THUMBNAIL_PX = 96


def thumbnail_png(data: bytes, size: int = THUMBNAIL_PX) -> bytes:
    """``data`` (a stored image) shrunk to fit ``size`` x ``size``, as PNG."""
    with Image.open(io.BytesIO(data)) as opened:
        image = to_rgb(opened)
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_routes(app: FastAPI, context: Context) -> None:
    images = context.service.store.images
    page_reader = guard(context, "reader", allow_cookie=True)

    def stored(sha256: str) -> bytes:
        if not SHA256.match(sha256):
            raise ApiError(422, "sha256 must be 64 lowercase hex digits", "sha256")
        try:
            return images.get(sha256).read_bytes()
        except ImageStoreError as error:
            raise ApiError(404, str(error), "sha256") from None

    @app.get("/v1/images/{sha256}", tags=["images"], response_class=Response)
    def image(sha256: str, who: Principal = Depends(page_reader)) -> Response:
        data = stored(sha256)
        with Image.open(io.BytesIO(data)) as opened:
            kind = opened.format or "octet-stream"
        return Response(data, media_type=f"image/{kind.lower()}", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/v1/images/{sha256}/thumbnail", tags=["images"], response_class=Response)
    def thumbnail(sha256: str, who: Principal = Depends(page_reader)) -> Response:
        return Response(thumbnail_png(stored(sha256)), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400"})
