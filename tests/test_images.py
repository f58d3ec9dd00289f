"""Bad input gets a clear error; odd modes become RGB."""
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipgpt_core.images import BadImageError, load_image


def test_corrupt_file(tmp_path):
    p = tmp_path / "broken.png"
    good = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(good, format="PNG")
    p.write_bytes(good.getvalue()[:60])  # truncated
    with pytest.raises(BadImageError, match="Not a readable image"):
        load_image(p)
    (tmp_path / "text.jpg").write_text("not an image at all")
    with pytest.raises(BadImageError):
        load_image(tmp_path / "text.jpg")


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(BadImageError, match="No such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(BadImageError, match="folder"):
        load_image(tmp_path)


def test_huge_image_is_refused_before_decoding(tmp_path):
    p = tmp_path / "huge.png"
    Image.new("1", (9000, 7000)).save(p)   # 63 MP, a few KB on disk
    with pytest.raises(BadImageError, match="megapixels|too large"):
        load_image(p)


def test_large_image_is_shrunk():
    im = load_image(Image.new("RGB", (3000, 1500), "blue"))
    assert max(im.size) == 1024 and im.mode == "RGB"


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "1", "P", "CMYK", "I;16", "I", "F", "YCbCr"])
def test_odd_modes_become_rgb(mode):
    im = Image.new(mode, (40, 30))
    out = load_image(im)
    assert out.mode == "RGB" and out.size == (40, 30)


def test_transparent_pixels_become_white():
    im = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert load_image(im).getpixel((0, 0)) == (255, 255, 255)


def test_bytes_and_arrays():
    buf = io.BytesIO()
    Image.new("RGB", (10, 10), "green").save(buf, format="JPEG")
    assert load_image(buf.getvalue()).size == (10, 10)
    assert load_image(np.zeros((5, 6, 3), np.uint8)).size == (6, 5)
    with pytest.raises(BadImageError):
        load_image(12345)


def test_empty_and_non_image_files_say_so_without_the_server_path(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(BadImageError, match="empty"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "notes.png").write_text("not an image at all")
    with pytest.raises(BadImageError, match="Not an image") as e:
        load_image(tmp_path / "notes.png")
    assert str(tmp_path) not in str(e.value)     # an upload's path is a server temp file: not the user's business


def test_an_inline_upload_reaches_the_core_undecoded(tmp_path):
    """clipgpt_app.uploads.ImageFile hands the core a file, also for a base64 data URL, whatever its bytes."""
    import base64

    import gradio as gr
    from gradio.data_classes import ImageData

    from clipgpt_app.uploads import ImageFile
    upload = ImageFile()
    good = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(good, format="PNG")
    for data, ok in ((good.getvalue(), True), (b"not an image", False)):
        url = "data:image/png;base64," + base64.b64encode(data).decode()
        path = upload.preprocess(ImageData(url=url))
        assert Path(path).read_bytes() == data
        if ok:
            assert load_image(path).size == (8, 8)
        else:
            with pytest.raises(BadImageError, match="Not an image"):
                load_image(path)
    with pytest.raises(gr.Error, match="base64"):
        upload.preprocess(ImageData(url="data:image/png;base64,@@@"))
    assert upload.preprocess(None) is None
