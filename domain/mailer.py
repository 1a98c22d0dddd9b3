"""Outgoing email: a console backend (the default, prints the message) and SMTP (in an executor)."""
import asyncio
import email.message
import logging
import smtplib

from domain.errors import Unavailable

log = logging.getLogger("mail")


def build_message(sender, to, subject, body):
    message = email.message.EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message.set_content(body)
    return message


# The log record attribute that carries a console email's full text. configure_logging
# (handlers/logs.py) prints it, readable, on stderr; the JSON log on stdout shows only the record's
# one-line message, without the body.
EMAIL_TEXT = "email_text"


class ConsoleMailer:
    """For development: the console is the mailbox. The email is printed whole on stderr, as a
    person reads an email, so a reset link can be followed from the terminal; the JSON log on
    stdout says only to whom and what about. In production the body is withheld: reset links are
    credentials, and more people read logs than read a user's mailbox. Production configures SMTP."""

    RULE = "-" * 72

    def __init__(self, sender, show_body=True):
        self.sender = sender
        self.show_body = show_body

    async def send(self, to, subject, body):
        if not self.show_body:
            log.warning("email (console backend) to=%s subject=%s not delivered; body withheld", to, subject)
            return
        text = (f"{self.RULE}\nEmail (MAIL_BACKEND=console: printed here, not sent)\n"
                f"From: {self.sender}\nTo: {to}\nSubject: {subject}\n\n{body.rstrip()}\n{self.RULE}")
        log.info("email (console backend) to=%s subject=%s printed on stderr", to, subject,
                 extra={EMAIL_TEXT: text})


class SmtpMailer:
    def __init__(self, sender, host, port, use_tls=False, username="", password="", timeout=10):
        self.sender = sender
        self._options = dict(host=host, port=port, use_tls=use_tls, username=username,
                             password=password, timeout=timeout)

    async def send(self, to, subject, body):
        message = build_message(self.sender, to, subject, body)
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._deliver, message)
        except (OSError, smtplib.SMTPException) as e:
            log.error("email to %s not sent: %s", to, type(e).__name__)
            raise Unavailable("The email could not be sent. Try again shortly.") from None

    def _deliver(self, message):
        o = self._options
        with smtplib.SMTP(o["host"], o["port"], timeout=o["timeout"]) as smtp:
            if o["use_tls"]:
                smtp.starttls()
            if o["username"]:
                smtp.login(o["username"], o["password"])
            smtp.send_message(message)


def make_mailer(settings):
    if settings.mail_backend == "smtp":
        return SmtpMailer(settings.mail_default_sender, settings.mail_server, settings.mail_port,
                          settings.mail_use_tls, settings.mail_username, settings.mail_password)
    return ConsoleMailer(settings.mail_default_sender, show_body=settings.env != "production")
