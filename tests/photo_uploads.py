"""Photos for the upload tests: a phone-like JPEG carrying GPS, multipart bodies, an upload call."""
import io
import uuid

from PIL import Image

GPS_IFD = 0x8825


def jpeg_with_gps(size=(64, 48)):
    """A JPEG as a location-aware phone writes it: EXIF with the camera and a GPS position."""
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[GPS_IFD] = {1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 36.0)}
    out = io.BytesIO()
    Image.new("RGB", size, "green").save(out, "JPEG", exif=exif)
    assert Image.open(io.BytesIO(out.getvalue())).getexif().get_ifd(GPS_IFD)  # it really carries GPS
    return out.getvalue()


def png(size=(16, 16)):
    out = io.BytesIO()
    Image.new("RGB", size, "blue").save(out, "PNG")
    return out.getvalue()


def carries_gps(data):
    image = Image.open(io.BytesIO(data))
    return bool(image.getexif().get_ifd(GPS_IFD)) or b"SecretCam" in data


def multipart(data, filename="photo.jpg", content_type="image/jpeg", field="photo"):
    """(body, headers) of a multipart/form-data request with one file part."""
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n")
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def upload(api, event_id, token, data=None, **part):
    body, headers = multipart(jpeg_with_gps() if data is None else data, **part)
    return await api.call("POST", f"/api/v1/events/{event_id}/photos", token=token, raw=body, headers=headers)
