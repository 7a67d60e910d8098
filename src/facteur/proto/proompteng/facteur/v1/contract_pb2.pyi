from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CommandEvent(_message.Message):
    __slots__ = ("provider", "interaction_id", "application_id", "command", "command_id", "version", "token", "options", "guild_id", "channel_id", "user", "member", "locale", "guild_locale", "response", "timestamp", "correlation_id", "trace_id")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    GUILD_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    GUILD_LOCALE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    provider: str
    interaction_id: str
    application_id: str
    command: str
    command_id: str
    version: int
    token: str
    options: _containers.ScalarMap[str, str]
    guild_id: str
    channel_id: str
    user: DiscordUser
    member: DiscordMember
    locale: str
    guild_locale: str
    response: Response
    timestamp: str
    correlation_id: str
    trace_id: str
    def __init__(self, provider: _Optional[str] = ..., interaction_id: _Optional[str] = ..., application_id: _Optional[str] = ..., command: _Optional[str] = ..., command_id: _Optional[str] = ..., version: _Optional[int] = ..., token: _Optional[str] = ..., options: _Optional[_Mapping[str, str]] = ..., guild_id: _Optional[str] = ..., channel_id: _Optional[str] = ..., user: _Optional[_Union[DiscordUser, _Mapping]] = ..., member: _Optional[_Union[DiscordMember, _Mapping]] = ..., locale: _Optional[str] = ..., guild_locale: _Optional[str] = ..., response: _Optional[_Union[Response, _Mapping]] = ..., timestamp: _Optional[str] = ..., correlation_id: _Optional[str] = ..., trace_id: _Optional[str] = ...) -> None: ...

class DiscordUser(_message.Message):
    __slots__ = ("id", "username", "global_name", "discriminator")
    ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_NAME_FIELD_NUMBER: _ClassVar[int]
    DISCRIMINATOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    username: str
    global_name: str
    discriminator: str
    def __init__(self, id: _Optional[str] = ..., username: _Optional[str] = ..., global_name: _Optional[str] = ..., discriminator: _Optional[str] = ...) -> None: ...

class DiscordMember(_message.Message):
    __slots__ = ("id", "roles")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    id: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("type", "flags")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    type: int
    flags: int
    def __init__(self, type: _Optional[int] = ..., flags: _Optional[int] = ...) -> None: ...

class DispatchResult(_message.Message):
    __slots__ = ("namespace", "workflow_name", "message", "correlation_id", "trace_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    workflow_name: str
    message: str
    correlation_id: str
    trace_id: str
    def __init__(self, namespace: _Optional[str] = ..., workflow_name: _Optional[str] = ..., message: _Optional[str] = ..., correlation_id: _Optional[str] = ..., trace_id: _Optional[str] = ...) -> None: ...
